/* Cycle counter for Xtensa LX7 (ESP32-S3): the CCOUNT special register. */
#include <stdint.h>

#include "board.h"

void board_uart_init(void); /* board.c: your UART set-up (ESP-IDF uart driver) */

void board_init(void) { board_uart_init(); }

uint32_t board_counter(void) {
  uint32_t c;
  __asm__ __volatile__("rsr %0, ccount" : "=a"(c));
  return c;
}
