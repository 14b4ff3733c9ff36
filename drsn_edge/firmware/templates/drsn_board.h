/* Board interface of the drsn-edge C-engine firmware (main_c.c). One board_*.c file per board family
 * implements it together with the UART hooks of drsn_proto.h (uart_getc, uart_write). */
#ifndef DRSN_BOARD_H_C
#define DRSN_BOARD_H_C
#include <stdint.h>

void board_init(void);                       /* clocks, UART (115200 8N1 on real boards), counter */
uint32_t board_counter(void);                /* free-running 32-bit counter: cycles or instructions */
uint32_t board_clock_hz(void);               /* core clock the counter's cycles refer to */
uint8_t board_counter_is_instructions(void); /* 1 under QEMU -icount (instructions), 0 for cycle counters */
void board_reset(void);                      /* a full system reset (the device boots and says HELLO again) */
#if defined(DRSN_PROFILING)
/* Only the profiling firmware (drsn_prof.c) needs these; a board without them cannot be profiled per kernel. */
uint32_t board_ticks(void);                  /* raw free-running up-counter, read as cheaply as possible */
extern const uint32_t board_ticks_mask;      /* its width: it wraps from board_ticks_mask to 0 */
uint32_t board_tick_hz(void);                /* the rate it counts at */
#endif
#endif
