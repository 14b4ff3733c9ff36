/* Stand-in for a generated C engine (same interface as drsn_edge.cengine's drsn_model.h): a fixed int8
 * "network" small enough to hand-check, for the transport tests. */
#ifndef DRSN_MODEL_H
#define DRSN_MODEL_H
#include <stdint.h>

#define DRSN_INPUT_SIZE 2048u
#define DRSN_OUTPUT_SIZE 10u
#define DRSN_INPUT_SCALE 0.05f
#define DRSN_INPUT_ZERO_POINT 0
#define DRSN_OUTPUT_SCALE 0.125f
#define DRSN_OUTPUT_ZERO_POINT (-3)
#define DRSN_MODEL_CRC 0x5A17C0DEu
#define DRSN_ARENA_BYTES 0u
#define DRSN_MACS (DRSN_INPUT_SIZE * DRSN_OUTPUT_SIZE)
#define DRSN_GUARD_TAPS_SIZE 0 /* no domain guard */

int drsn_infer(const int8_t *in, int8_t *out);
#endif
