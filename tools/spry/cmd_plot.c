/*
 * cmd_plot.c -- `spry plot`: SVG curves (loss, learning rate, throughput, ...) of one or more runs
 * from their metrics.jsonl, several runs on one chart.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/plot.h"

static void plot_usage(FILE *f) {
    fprintf(f, "usage: spry plot [options] RUN... \n"
               "  RUN               a run directory (with metrics.jsonl) or a metrics .jsonl file\n"
               "  --out FILE        output SVG (runs/plot.svg)\n"
               "  --metrics LIST    comma-separated metrics, one panel each (loss,lr,tokens_per_s)\n"
               "  --x KEY           x axis: step, samples, tokens or eff_tokens (step)\n"
               "  --title TEXT      chart title (spry training runs)\n");
}

typedef struct run_data {
    char    label[256];
    double *x, *y[8];
    int64_t n, cap;
} run_data;

static int load_run(const char *arg, const char *xkey, char metrics[][32], int n_metrics, run_data *r) {
    char path[2048];
    size_t len = strlen(arg);
    if (len > 6 && !strcmp(arg + len - 6, ".jsonl"))
        snprintf(path, sizeof path, "%s", arg);
    else
        snprintf(path, sizeof path, "%s/metrics.jsonl", arg);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "spry plot: cannot read %s\n", path);
        return 1;
    }
    const char *base = strrchr(arg, '/');
    snprintf(r->label, sizeof r->label, "%s", base && base[1] ? base + 1 : arg);
    char   line[4096];
    int64_t lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        cJSON *j = cJSON_Parse(line);
        if (!j) {
            fprintf(stderr, "spry plot: %s:%lld: not a JSON object\n", path, (long long)lineno);
            fclose(f);
            return 1;
        }
        const cJSON *xv = cJSON_GetObjectItemCaseSensitive(j, xkey);
        if (cJSON_IsNumber(xv)) {
            if (r->n == r->cap) {
                r->cap = r->cap ? 2 * r->cap : 256;
                r->x   = realloc(r->x, sizeof(double) * (size_t)r->cap);
                for (int k = 0; k < n_metrics; k++) r->y[k] = realloc(r->y[k], sizeof(double) * (size_t)r->cap);
            }
            r->x[r->n] = xv->valuedouble;
            for (int k = 0; k < n_metrics; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, metrics[k]);
                r->y[k][r->n]  = cJSON_IsNumber(v) ? v->valuedouble : NAN;
            }
            r->n++;
        }
        cJSON_Delete(j);
    }
    fclose(f);
    return 0;
}

int spry_cmd_plot(int argc, char **argv) {
    const char *out = "runs/plot.svg", *xkey = "step", *title = "spry training runs";
    char        metrics[8][32] = {"loss", "lr", "tokens_per_s"};
    int         n_metrics = 3, n_runs = 0;
    const char *runs[16];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plot_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--out") && v) {
            out = v, i++;
        } else if (!strcmp(a, "--x") && v) {
            if (strcmp(v, "step") && strcmp(v, "samples") && strcmp(v, "tokens") && strcmp(v, "eff_tokens")) {
                fprintf(stderr, "spry plot: --x must be step, samples, tokens or eff_tokens, got '%s'\n", v);
                return 2;
            }
            xkey = v, i++;
        } else if (!strcmp(a, "--title") && v) {
            title = v, i++;
        } else if (!strcmp(a, "--metrics") && v) {
            n_metrics = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *t = strtok(buf, ","); t && n_metrics < 8; t = strtok(NULL, ","))
                snprintf(metrics[n_metrics++], sizeof metrics[0], "%s", t);
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "spry plot: unknown or incomplete option '%s'\n", a);
            plot_usage(stderr);
            return 2;
        } else if (n_runs < 16) {
            runs[n_runs++] = a;
        }
    }
    if (n_runs == 0 || n_metrics == 0) {
        fprintf(stderr, "spry plot: give at least one run directory\n");
        plot_usage(stderr);
        return 2;
    }
    run_data *rd = calloc((size_t)n_runs, sizeof *rd);
    int       rc = 0;
    for (int r = 0; r < n_runs && !rc; r++) rc = load_run(runs[r], xkey, metrics, n_metrics, &rd[r]);
    if (!rc) {
        spry_plot_panel  panels[8];
        spry_plot_series series[8][16];
        for (int k = 0; k < n_metrics; k++) {
            for (int r = 0; r < n_runs; r++)
                series[k][r] = (spry_plot_series){.label = rd[r].label, .x = rd[r].x, .y = rd[r].y[k], .n = rd[r].n};
            panels[k] = (spry_plot_panel){.title = metrics[k], .xlabel = xkey, .ylabel = metrics[k],
                                          .series = series[k], .n_series = n_runs};
        }
        spry_status st = spry_plot_svg(out, title, panels, n_metrics);
        if (st) {
            fprintf(stderr, "spry plot: %s\n", spry_last_error());
            rc = 1;
        } else {
            printf("wrote %s (%d run%s, %d panel%s)\n", out, n_runs, n_runs > 1 ? "s" : "", n_metrics, n_metrics > 1 ? "s" : "");
        }
    }
    for (int r = 0; r < n_runs; r++) {
        free(rd[r].x);
        for (int k = 0; k < 8; k++) free(rd[r].y[k]);
    }
    free(rd);
    return rc;
}
