/* UART hooks for {{TARGET}}: fill these in with your board's UART driver (115200 8N1). They are all the
 * harness needs from the board besides the counter in board_*.c. */
#include <stddef.h>
#include <stdint.h>

void board_uart_init(void) { /* e.g. HAL_UART_Init / nrfx_uarte_init / uart_init(uart0, 115200) */ }

int uart_getc(void) { /* return the next received byte, or -1 when none is waiting */ return -1; }

void uart_write(const uint8_t *data, size_t n) { /* blocking write of n bytes */ (void)data; (void)n; }
