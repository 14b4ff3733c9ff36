/* Board glue for the drsn-edge harness — {{TARGET}} ({{CPU}}). Implement uart_getc/uart_write for your
 * board's UART (HAL, nrfx, pico-sdk, ESP-IDF) in board.c; the cycle counter is provided here. */
#ifndef DRSN_BOARD_H
#define DRSN_BOARD_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BOARD_COUNTER_IS_INSTRUCTIONS {{COUNTER_IS_INSTRUCTIONS}}

void board_init(void);       /* clocks, UART at 115200 8N1, counter */
uint32_t board_counter(void);

#ifdef __cplusplus
}
#endif
#endif
