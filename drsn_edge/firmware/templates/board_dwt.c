/* Cycle counter for Cortex-M3/M4/M7/M33: the DWT CYCCNT register (CoreSight). */
#include <stdint.h>

#include "board.h"

#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR (*(volatile uint32_t *)0xE0001FB0u)

void board_uart_init(void); /* board.c: your UART set-up */

void board_init(void) {
  board_uart_init();
  DEMCR |= (1u << 24); /* TRCENA */
  DWT_LAR = 0xC5ACCE55u; /* unlock (Cortex-M7) */
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u; /* CYCCNTENA */
}

uint32_t board_counter(void) { return DWT_CYCCNT; }
