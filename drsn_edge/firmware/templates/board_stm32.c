/* Board: STM32H7 (NUCLEO-H743ZI / -H743ZI2; the same code serves other H7 parts with USART3 on PD8/PD9).
 *
 * UART: USART3, TX PD8 / RX PD9 (alternate function 7) — wired to the on-board ST-LINK's virtual COM port,
 *       which the host sees as /dev/ttyACM0 (Linux) or COMn (Windows): `serial:///dev/ttyACM0?baud=115200`.
 *       115200 8N1, no flow control. Kernel clock: PCLK1 (rcc_pclk1, the reset default).
 * Clock: out of reset the core runs from HSI at 64 MHz with PCLK1 = 64 MHz, which is what this file assumes
 *       unless board_clock_config() is overridden. For the target's 480 MHz, override it with the CubeMX
 *       SystemClock_Config() (VOS0, PLL1 at 480 MHz, PCLK1 = 120 MHz) and return the new core clock; set
 *       BOARD_PCLK1_HZ to match when compiling (-DBOARD_PCLK1_HZ=120000000).
 * Counter: DWT CYCCNT, core cycles (32 bits: wraps after 8.9 s at 480 MHz).
 * Build: with the vendor's startup file and linker script (CubeMX / STM32CubeH7: startup_stm32h743xx.s,
 *       STM32H743ZITx_FLASH.ld), flags -mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16, plus
 *       main_c.c drsn_proto.c board_stm32.c and the engine's drsn_model.c drsn_kernels.c.
 * Flash: `STM32_Programmer_CLI -c port=SWD -w drsn_fw.elf -v -rst`, or
 *       `openocd -f board/st_nucleo_h743zi.cfg -c "program drsn_fw.elf verify reset exit"`, or
 *       `st-flash --reset write drsn_fw.bin 0x08000000`. */
#include <stddef.h>
#include <stdint.h>

#include "drsn_board.h"
#include "drsn_proto.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define RCC_AHB4ENR REG(0x580244E0u)  /* bit 3: GPIOD */
#define RCC_APB1LENR REG(0x580244E8u) /* bit 18: USART3 */
#define GPIOD_MODER REG(0x58020C00u)
#define GPIOD_AFRH REG(0x58020C24u)
#define USART3 0x40004800u
#define USART_CR1 REG(USART3 + 0x00u) /* UE bit 0, RE bit 2, TE bit 3 */
#define USART_BRR REG(USART3 + 0x0Cu)
#define USART_ISR REG(USART3 + 0x1Cu) /* ORE bit 3, RXNE bit 5, TXE bit 7 */
#define USART_ICR REG(USART3 + 0x20u)
#define USART_RDR REG(USART3 + 0x24u)
#define USART_TDR REG(USART3 + 0x28u)
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)
#define SCB_AIRCR REG(0xE000ED0Cu)

#ifndef BOARD_PCLK1_HZ
#define BOARD_PCLK1_HZ 64000000u
#endif
#ifndef BOARD_BAUD
#define BOARD_BAUD 115200u
#endif

static uint32_t core_hz = 64000000u;

/* Override (a strong definition elsewhere) to raise the clocks; return the core clock in Hz. */
__attribute__((weak)) uint32_t board_clock_config(void) { return 64000000u; }

void board_init(void) {
  core_hz = board_clock_config();
  RCC_AHB4ENR |= 1u << 3;
  RCC_APB1LENR |= 1u << 18;
  (void)RCC_APB1LENR; /* read back: the clock is on before the peripheral is touched */
  GPIOD_MODER = (GPIOD_MODER & ~(0xFu << 16)) | (0xAu << 16); /* PD8, PD9: alternate function */
  GPIOD_AFRH = (GPIOD_AFRH & ~0xFFu) | 0x77u;                  /* AF7 = USART3 */
  USART_CR1 = 0u;
  USART_BRR = (BOARD_PCLK1_HZ + BOARD_BAUD / 2u) / BOARD_BAUD;
  USART_CR1 = (1u << 0) | (1u << 2) | (1u << 3);
  DEMCR |= 1u << 24; /* TRCENA */
  DWT_LAR = 0xC5ACCE55u;
  DWT_CYCCNT = 0u;
  DWT_CTRL |= 1u;
}

uint32_t board_counter(void) { return DWT_CYCCNT; }
uint32_t board_clock_hz(void) { return core_hz; }
uint8_t board_counter_is_instructions(void) { return 0u; }

void board_reset(void) {
  SCB_AIRCR = 0x05FA0004u;
  for (;;) {
  }
}

int uart_getc(void) {
  uint32_t isr = USART_ISR;
  if (isr & (1u << 3)) USART_ICR = 1u << 3; /* overrun: clear it, the protocol resends what was lost */
  return (isr & (1u << 5)) ? (int)(USART_RDR & 0xFFu) : -1;
}

void uart_write(const uint8_t *data, size_t n) {
  for (size_t i = 0; i < n; i++) {
    while (!(USART_ISR & (1u << 7))) {
    }
    USART_TDR = data[i];
  }
}
