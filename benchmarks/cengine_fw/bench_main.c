/* Instruction counts of one drsn_infer call on QEMU (-icount shift=0: one instruction per ns of
 * virtual time). SysTick runs from the core clock, so ticks x (1e9 / clock) = instructions; the
 * ratio is calibrated against a loop of known length. Prints TICKS/CAL/K lines, exits 0 when the
 * output equals the expected logits. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "drsn_model.h"
#include "bench_data.h"  /* bench_in[DRSN_INPUT_SIZE], bench_expected[DRSN_OUTPUT_SIZE] */

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static uint32_t prof_ticks[DRSN_NUM_KERNELS];
static uint32_t prof_t0;

void bench_kernel_begin(int i) { (void)i; prof_t0 = SYST_CVR; }
void bench_kernel_end(int i) { prof_ticks[i] += (prof_t0 - SYST_CVR) & 0xFFFFFFu; }

static void systick_start(void) {
  SYST_CSR = 0;
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 5u; /* enable, core clock, no interrupt */
}

static uint32_t calibration_loop(void) { /* 2 * 65536 + 1 instructions between the reads */
  uint32_t a, b;
  a = SYST_CVR;
  __asm volatile(".syntax unified\n ldr r0, =65536\n1:\n subs r0, r0, #1\n bne 1b\n" ::: "r0", "cc");
  b = SYST_CVR;
  return (a - b) & 0xFFFFFFu;
}

int main(void) {
  static int8_t out[DRSN_OUTPUT_SIZE];
  systick_start();
  const uint32_t cal = calibration_loop();
  const uint32_t a = SYST_CVR;
  drsn_infer(bench_in, out);
  const uint32_t b = SYST_CVR;
  printf("CAL %lu %lu\n", (unsigned long)cal, 131073ul);
  printf("TICKS %lu\n", (unsigned long)((a - b) & 0xFFFFFFu));
  for (int i = 0; i < DRSN_NUM_KERNELS; ++i)
    if (prof_ticks[i]) printf("K %d %lu\n", i, (unsigned long)prof_ticks[i]);
  const int ok = memcmp(out, bench_expected, DRSN_OUTPUT_SIZE) == 0;
  printf("OUT %s\n", ok ? "match" : "MISMATCH");
  return ok ? 0 : 1;
}
