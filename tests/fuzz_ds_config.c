/*
 * fuzz_ds_config.c -- libFuzzer target for the DeepSpeed config parser: any bytes must parse or
 * fail with a status and a message, never crash or leak. Built and run by scripts/fuzz.sh.
 */
#include <stdlib.h>
#include <string.h>

#include "spry/ds_config.h"
#include "spry/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spry_log_set_level(SPRY_LOG_ERROR);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    spry_ds_config c;
    if (spry_ds_config_parse(text, "fuzz", 1 + (int)(size % 4), &c) == SPRY_OK) spry_ds_config_free(&c);
    free(text);
    return 0;
}
