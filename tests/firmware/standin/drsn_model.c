/* out[k] = clamp(((sum_i in[i] * w(k, i)) >> 10) - 3, -128, 127), w(k, i) = ((7 i + 13 k) mod 255) - 127.
 * Test hooks on the first three inputs: (127, 127, 127) resets the board, (-128, -128, -128) hangs,
 * (100, -100, 100) puts line noise on the UART before the answer. */
#include "drsn_model.h"

#include <stddef.h>

#include "drsn_board.h"
#include "drsn_proto.h"

static int hook(const int8_t *in, int8_t a, int8_t b) { return in[0] == a && in[1] == b && in[2] == a; }

int drsn_infer(const int8_t *in, int8_t *out) {
  static const uint8_t noise[] = {0xA5, 0x5A, 0x01, 0x82, 0xFF, 0xFF, 0xFF, 0x7F, 0x13, 0xA5, 0x00, 0x5A};
  if (hook(in, 127, 127)) board_reset();
  if (hook(in, -128, -128)) {
    for (;;) {
    }
  }
  if (hook(in, 100, -100)) uart_write(noise, sizeof noise);
  for (uint32_t k = 0; k < DRSN_OUTPUT_SIZE; k++) {
    int32_t acc = 0;
    for (uint32_t i = 0; i < DRSN_INPUT_SIZE; i++) acc += (int32_t)in[i] * (int32_t)((7 * i + 13 * k) % 255 - 127);
    int32_t v = (acc >> 10) + DRSN_OUTPUT_ZERO_POINT;
    out[k] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
  }
  return 0;
}
