/* Per-kernel tick totals for the drsn-edge serial protocol's PROFILE request (profiling firmware only;
 * see drsn_prof.h). The board provides board_ticks() (a raw free-running up-counter), board_ticks_mask
 * (its width: differences are taken modulo mask + 1) and board_tick_hz(). */
#include "drsn_prof.h"

#include <string.h>

#include "drsn_board.h"
#include "drsn_model.h"
#include "drsn_proto.h"

#define DRSN_PROF_CAL_PAIRS 1024u /* empty brackets timed to measure one bracket's own cost */
#define DRSN_PROF_CAL_SLOT DRSN_NUM_KERNELS

static uint32_t ticks[DRSN_NUM_KERNELS + 1]; /* one slot per kernel, and the calibration slot */
static uint32_t mark;
static uint32_t cal_ticks;

/* Never inlined, not even into calibrate() below: the brackets timed there must be the very calls that
 * drsn_infer makes from its own translation unit. */
__attribute__((noinline)) void drsn_prof_begin(void) { mark = board_ticks(); }

__attribute__((noinline)) void drsn_prof_end(uint32_t kernel) {
  ticks[kernel] += (board_ticks() - mark) & board_ticks_mask;
}

/* Ticks of DRSN_PROF_CAL_PAIRS empty brackets: the same calls as around a kernel, with nothing between. */
static uint32_t calibrate(void) {
  ticks[DRSN_PROF_CAL_SLOT] = 0u;
  for (uint32_t j = 0; j < DRSN_PROF_CAL_PAIRS; j++) {
    DRSN_KERNEL_BEGIN(DRSN_PROF_CAL_SLOT);
    DRSN_KERNEL_END(DRSN_PROF_CAL_SLOT);
  }
  return ticks[DRSN_PROF_CAL_SLOT];
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* PROFILE_RSP: kernels u16, tick_hz u32, cal_pairs u32, cal_ticks u32, ticks u32[kernels]; the totals are
 * those since the previous PROFILE request, and are cleared. */
void drsn_prof_answer(uint16_t seq) {
  static uint8_t p[14 + 4u * DRSN_NUM_KERNELS];
  if (cal_ticks == 0u) cal_ticks = calibrate();
  p[0] = (uint8_t)DRSN_NUM_KERNELS;
  p[1] = (uint8_t)(DRSN_NUM_KERNELS >> 8);
  put32(p + 2, board_tick_hz());
  put32(p + 6, DRSN_PROF_CAL_PAIRS);
  put32(p + 10, cal_ticks);
  for (uint32_t k = 0; k < DRSN_NUM_KERNELS; k++) put32(p + 14 + 4u * k, ticks[k]);
  memset(ticks, 0, sizeof ticks);
  drsn_send(DRSN_PROFILE_RSP, seq, p, (uint16_t)sizeof p);
}
