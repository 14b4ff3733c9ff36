/* Board: Raspberry Pi RP2040 (Raspberry Pi Pico).
 *
 * UART: UART0 (PL011), TX GP0 / RX GP1, 115200 8N1 with its 32-byte FIFOs — connect a 3.3 V USB-serial
 *       adapter (or a Debug Probe's UART: /dev/ttyACM0) to GP0/GP1/GND: `serial:///dev/ttyACM0?baud=115200`.
 * Clock: this file expects the pico-sdk runtime to have set the clocks before main() (clk_sys 125 MHz,
 *       clk_peri = clk_sys: the SDK default); the UART divisor is computed from BOARD_PERI_HZ, the cycle
 *       counter's clock is BOARD_SYS_HZ (-DBOARD_SYS_HZ=133000000 after set_sys_clock_khz(133000, true)).
 * Counter: SysTick on the processor clock (Cortex-M0+ has no DWT cycle counter), 24 bits extended to 32 by
 *       its interrupt (pico-sdk vector name isr_systick).
 * Build: pico-sdk (add_executable with main_c.c drsn_proto.c board_rp2040.c drsn_model.c drsn_kernels.c,
 *       target_link_libraries pico_runtime, pico_add_extra_outputs for the .uf2), -mcpu=cortex-m0plus.
 * Flash: hold BOOTSEL while plugging in and copy drsn_fw.uf2 to the RPI-RP2 drive, or
 *       `picotool load -x drsn_fw.uf2 -f`, or through a Debug Probe:
 *       `openocd -f interface/cmsis-dap.cfg -f target/rp2040.cfg -c "program drsn_fw.elf verify reset exit"`. */
#include <stddef.h>
#include <stdint.h>

#include "drsn_board.h"
#include "drsn_proto.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define RESETS_RESET_CLR REG(0x4000C000u + 0x3000u) /* atomic-clear alias */
#define RESETS_RESET_DONE REG(0x4000C008u)
#define IO_BANK0_GPIO_CTRL(n) REG(0x40014004u + 8u * (n))
#define UART0 0x40034000u
#define UARTDR REG(UART0 + 0x000u)
#define UARTFR REG(UART0 + 0x018u) /* RXFE bit 4, TXFF bit 5 */
#define UARTIBRD REG(UART0 + 0x024u)
#define UARTFBRD REG(UART0 + 0x028u)
#define UARTLCR_H REG(UART0 + 0x02Cu)
#define UARTCR REG(UART0 + 0x030u)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SCB_AIRCR REG(0xE000ED0Cu)

#ifndef BOARD_SYS_HZ
#define BOARD_SYS_HZ 125000000u
#endif
#ifndef BOARD_PERI_HZ
#define BOARD_PERI_HZ BOARD_SYS_HZ
#endif
#define RESET_BITS ((1u << 5) | (1u << 8) | (1u << 22)) /* IO_BANK0, PADS_BANK0, UART0 */

static volatile uint32_t wraps;

void isr_systick(void) { wraps++; }

void board_init(void) {
  RESETS_RESET_CLR = RESET_BITS;
  while ((RESETS_RESET_DONE & RESET_BITS) != RESET_BITS) {
  }
  uint32_t div64 = (8u * BOARD_PERI_HZ / 115200u + 1u) / 2u; /* 64 x PERI / (16 x baud), rounded */
  UARTIBRD = div64 >> 6;
  UARTFBRD = div64 & 0x3Fu;
  UARTLCR_H = (3u << 5) | (1u << 4); /* 8 bits, FIFOs on (also latches the divisor) */
  UARTCR = (1u << 0) | (1u << 8) | (1u << 9);
  IO_BANK0_GPIO_CTRL(0) = 2u; /* FUNCSEL UART */
  IO_BANK0_GPIO_CTRL(1) = 2u;
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0u;
  SYST_CSR = 7u; /* processor clock, interrupt, enable */
}

uint32_t board_counter(void) {
  uint32_t w, v;
  do {
    w = wraps;
    v = SYST_CVR;
  } while (w != wraps);
  return (w << 24) + (0x00FFFFFFu - v);
}

uint32_t board_clock_hz(void) { return BOARD_SYS_HZ; }
uint8_t board_counter_is_instructions(void) { return 0u; }

void board_reset(void) {
  SCB_AIRCR = 0x05FA0004u;
  for (;;) {
  }
}

int uart_getc(void) { return (UARTFR & (1u << 4)) ? -1 : (int)(UARTDR & 0xFFu); }

void uart_write(const uint8_t *data, size_t n) {
  for (size_t i = 0; i < n; i++) {
    while (UARTFR & (1u << 5)) {
    }
    UARTDR = data[i];
  }
}
