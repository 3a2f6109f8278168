/*
 * plot.h -- line charts as standalone SVG files (no dependencies): several series per panel,
 * several panels stacked vertically, axes with rounded ticks, a legend. Used by `spry plot` for
 * loss / learning-rate / throughput curves of one or more runs.
 */
#ifndef SPRY_PLOT_H
#define SPRY_PLOT_H

#include <stdint.h>

#include "spry/status.h"

typedef struct spry_plot_series {
    const char   *label; // legend text (a run name)
    const double *x, *y; // (n)
    int64_t       n;
} spry_plot_series;

typedef struct spry_plot_panel {
    const char             *title;  // "loss"
    const char             *xlabel; // "step"
    const char             *ylabel;
    const spry_plot_series *series;
    int                     n_series;
} spry_plot_panel;

// Writes the panels as one SVG (temporary name + rename). Non-finite points are skipped.
// SPRY_ERR_IO on write errors, SPRY_ERR_ARG when there is nothing to plot.
spry_status spry_plot_svg(const char *path, const char *title, const spry_plot_panel *panels,
                          int n_panels);

#endif
