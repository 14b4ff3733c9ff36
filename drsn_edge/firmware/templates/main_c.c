/* drsn-edge firmware for the generated C engine (drsn_model.c / drsn_kernels.c): answers INFO and INFER
 * requests of the drsn-edge serial protocol on the board's UART and reports the cycles (DWT, SysTick,
 * CCOUNT) or, under QEMU -icount, the instructions of every inference. Board glue: drsn_board.h. */
#include <stddef.h>
#include <stdint.h>

#include "drsn_board.h"
#include "drsn_guard.h"
#include "drsn_model.h"
#include "drsn_proto.h"

#ifndef DRSN_FW_NAME
#define DRSN_FW_NAME "drsn-edge c engine"
#endif
#ifndef DRSN_ARENA_BYTES
#define DRSN_ARENA_BYTES 0u
#endif

int drsn_proto_infer(const int8_t *input, int8_t *logits, uint32_t *counts, float *guard_score) {
  uint32_t t0 = board_counter();
  int status = drsn_infer(input, logits);
  *counts = board_counter() - t0; /* the network only; the guard's score follows */
#if DRSN_GUARD_TAPS_SIZE > 0 && DRSN_GUARD_DIM > 0
  static int8_t taps[DRSN_GUARD_TAPS_SIZE];
  drsn_guard_taps(taps);
  *guard_score = drsn_guard_score(taps);
#else
  *guard_score = -1.0f;
#endif
  return status;
}

int main(void) {
  static uint8_t rx[DRSN_INPUT_SIZE + 16];
  drsn_info_t info = {DRSN_INPUT_SIZE, DRSN_OUTPUT_SIZE, DRSN_INPUT_SCALE, DRSN_INPUT_ZERO_POINT, DRSN_OUTPUT_SCALE,
                      DRSN_OUTPUT_ZERO_POINT, DRSN_ARENA_BYTES, 0, 0, DRSN_MODEL_CRC, DRSN_FW_NAME,
                      DRSN_GUARD_DIM, DRSN_GUARD_THRESHOLD};
  board_init();
  info.clock_hz = board_clock_hz();
  info.counter_is_instructions = board_counter_is_instructions();
  drsn_send(DRSN_HELLO, 0, NULL, 0);
  for (;;) drsn_poll(&info, rx, sizeof rx);
}
