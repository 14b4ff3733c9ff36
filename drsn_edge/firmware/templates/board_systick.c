/* Cycle counter for Cortex-M0+ (no DWT CYCCNT): SysTick counting core clocks, extended to 32 bits. */
#include <stdint.h>

#include "board.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static volatile uint32_t wraps;
void SysTick_Handler(void) { wraps++; }
void board_uart_init(void); /* board.c: your UART set-up */

void board_init(void) {
  board_uart_init();
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 0x7u; /* processor clock, interrupt, enable */
}

uint32_t board_counter(void) {
  uint32_t w, v;
  do {
    w = wraps;
    v = SYST_CVR;
  } while (w != wraps);
  return (w << 24) + (0x00FFFFFFu - v);
}
