/*
 * plot.c -- SVG line charts (see plot.h). Ticks follow the 1-2-5 rule on a span padded by 5%.
 */
#define _POSIX_C_SOURCE 200809L
#include "spry/plot.h"

#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define W        760
#define PANEL_H  260
#define MARGIN_L 80
#define MARGIN_R 170
#define MARGIN_T 40
#define MARGIN_B 50

static const char *k_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static double nice_step(double span, int target) {
    double raw = span / target, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void xml_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

static void panel(FILE *f, const spry_plot_panel *p, double y0) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < p->n_series; s++)
        for (int64_t i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            xmin = fmin(xmin, x), xmax = fmax(xmax, x), ymin = fmin(ymin, y), ymax = fmax(ymax, y);
        }
    if (!isfinite(xmin)) return;
    if (xmax == xmin) xmax = xmin + 1;
    if (ymax == ymin) ymax = ymin + fmax(1e-12, fabs(ymin) * 0.1);
    double pad = (ymax - ymin) * 0.05;
    ymin -= pad, ymax += pad;
    double pw = W - MARGIN_L - MARGIN_R, ph = PANEL_H - MARGIN_T - MARGIN_B;
    double ox = MARGIN_L, oy = y0 + MARGIN_T;
#define PX(x) (ox + ((x) - xmin) / (xmax - xmin) * pw)
#define PY(y) (oy + ph - ((y) - ymin) / (ymax - ymin) * ph)
    fprintf(f, "<text x=\"%g\" y=\"%g\" font-size=\"15\" font-weight=\"bold\">", ox, y0 + 24);
    xml_text(f, p->title);
    fputs("</text>\n", f);
    fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n", ox, oy, pw, ph);
    double xs = nice_step(xmax - xmin, 6), ys = nice_step(ymax - ymin, 5);
    // ticks are k * step for integer k (no accumulated rounding, no "-0")
    for (double k = ceil(xmin / xs); k * xs <= xmax + 1e-9 * xs; k += 1) {
        double t = k * xs + 0.0;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%g\" "
                   "font-size=\"11\" text-anchor=\"middle\">%g</text>\n", PX(t), oy, PX(t), oy + ph, PX(t), oy + ph + 15, t);
    }
    for (double k = ceil(ymin / ys); k * ys <= ymax + 1e-9 * ys; k += 1) {
        double t = k == 0 ? 0.0 : k * ys;
        fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%g\" y=\"%.1f\" "
                   "font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", ox, PY(t), ox + pw, PY(t), ox - 6, PY(t) + 4, t);
    }
    fprintf(f, "<text x=\"%g\" y=\"%g\" font-size=\"12\" text-anchor=\"middle\">", ox + pw / 2, oy + ph + 35);
    xml_text(f, p->xlabel);
    fprintf(f, "</text>\n<text x=\"%g\" y=\"%g\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 %g %g)\">",
            ox - 58, oy + ph / 2, ox - 58, oy + ph / 2);
    xml_text(f, p->ylabel);
    fputs("</text>\n", f);
    for (int s = 0; s < p->n_series; s++) {
        const char *col = k_colors[s % 10];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" points=\"", col);
        for (int64_t i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (isfinite(x) && isfinite(y)) fprintf(f, "%.1f,%.1f ", PX(x), PY(y));
        }
        fputs("\"/>\n", f);
        double ly = oy + 14 + 18 * s;
        fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"3\"/>"
                   "<text x=\"%g\" y=\"%g\" font-size=\"12\">", ox + pw + 12, ly, ox + pw + 32, ly, col, ox + pw + 38, ly + 4);
        xml_text(f, p->series[s].label);
        fputs("</text>\n", f);
    }
#undef PX
#undef PY
}

spry_status spry_plot_svg(const char *path, const char *title, const spry_plot_panel *panels,
                          int n_panels) {
    int64_t pts = 0;
    for (int k = 0; k < n_panels; k++)
        for (int s = 0; s < panels[k].n_series; s++) pts += panels[k].series[s].n;
    if (pts == 0) return spry_errorf(SPRY_ERR_ARG, "%s: nothing to plot (no data points)", path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return spry_errorf(SPRY_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    int H = 40 + n_panels * PANEL_H;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"26\" font-size=\"17\" text-anchor=\"middle\">", W / 2);
    xml_text(f, title);
    fputs("</text>\n", f);
    for (int k = 0; k < n_panels; k++) panel(f, &panels[k], 40 + k * PANEL_H);
    fputs("</svg>\n", f);
    bool ok = (fflush(f) == 0) && (fsync(fileno(f)) == 0);
    ok      = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return spry_errorf(SPRY_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return SPRY_OK;
}
