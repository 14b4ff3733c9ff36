/* Board: STM32H7 (NUCLEO-H743ZI / -H743ZI2) and, built with -DSTM32F7 (CubeF7 defines STM32F746xx), STM32F7
 * (STM32F746G-DISCO).
 *
 * UART: H7: USART3, TX PD8 / RX PD9 (alternate function 7); F7 DISCO: USART1, TX PA9 / RX PB7 (AF7). Both are
 *       wired to the on-board ST-LINK's virtual COM port, which the host sees as /dev/ttyACM0 (Linux) or COMn
 *       (Windows): `serial:///dev/ttyACM0?baud=115200`. 115200 8N1, no flow control. Kernel clock: the APB
 *       clock (H7 rcc_pclk1, F7 PCLK2: the reset defaults).
 * Clock: out of reset the core runs from HSI — 64 MHz on H7, 16 MHz on F7, with the APB clock equal — which
 *       is what this file assumes unless board_clock_config() is overridden. For the targets' 480 / 216 MHz,
 *       override it with the CubeMX SystemClock_Config() and return the new core clock, and set BOARD_PCLK_HZ
 *       to the UART's new APB clock when compiling (e.g. -DBOARD_PCLK_HZ=120000000 on H7 at 480 MHz).
 * Counter: DWT CYCCNT, core cycles (32 bits: wraps after 8.9 s at 480 MHz).
 * Build: with the vendor's startup file and linker script (CubeMX / STM32CubeH7: startup_stm32h743xx.s,
 *       STM32H743ZITx_FLASH.ld; CubeF7 likewise), flags -mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16, plus
 *       main_c.c drsn_proto.c board_stm32.c and the engine's drsn_model.c drsn_kernels.c.
 * Flash: `STM32_Programmer_CLI -c port=SWD -w drsn_fw.elf -v -rst`, or
 *       `openocd -f board/st_nucleo_h743zi.cfg -c "program drsn_fw.elf verify reset exit"`, or
 *       `st-flash --reset write drsn_fw.bin 0x08000000`. */
#include <stddef.h>
#include <stdint.h>

#include "drsn_board.h"
#include "drsn_proto.h"

#define REG(a) (*(volatile uint32_t *)(a))
#if defined(STM32F7) || defined(STM32F746xx)
#define STM32_FAMILY_F7 1
#define USART_BASE 0x40011000u      /* USART1 */
#define RCC_AHB1ENR REG(0x40023830u) /* bit 0: GPIOA, bit 1: GPIOB */
#define RCC_APB2ENR REG(0x40023844u) /* bit 4: USART1 */
#define GPIOA_MODER REG(0x40020000u)
#define GPIOA_AFRH REG(0x40020024u)
#define GPIOB_MODER REG(0x40020400u)
#define GPIOB_AFRL REG(0x40020420u)
#define RESET_HZ 16000000u
#else
#define STM32_FAMILY_F7 0
#define USART_BASE 0x40004800u        /* USART3 */
#define RCC_AHB4ENR REG(0x580244E0u)  /* bit 3: GPIOD */
#define RCC_APB1LENR REG(0x580244E8u) /* bit 18: USART3 */
#define GPIOD_MODER REG(0x58020C00u)
#define GPIOD_AFRH REG(0x58020C24u)
#define RESET_HZ 64000000u
#endif
#define USART_CR1 REG(USART_BASE + 0x00u) /* UE bit 0, RE bit 2, TE bit 3 (same layout on F7 and H7) */
#define USART_BRR REG(USART_BASE + 0x0Cu)
#define USART_ISR REG(USART_BASE + 0x1Cu) /* ORE bit 3, RXNE bit 5, TXE bit 7 */
#define USART_ICR REG(USART_BASE + 0x20u)
#define USART_RDR REG(USART_BASE + 0x24u)
#define USART_TDR REG(USART_BASE + 0x28u)
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)
#define SCB_AIRCR REG(0xE000ED0Cu)

#ifndef BOARD_PCLK_HZ
#define BOARD_PCLK_HZ RESET_HZ
#endif
#ifndef BOARD_BAUD
#define BOARD_BAUD 115200u
#endif

static uint32_t core_hz = RESET_HZ;

/* Override (a strong definition elsewhere) to raise the clocks; return the core clock in Hz. */
__attribute__((weak)) uint32_t board_clock_config(void) { return RESET_HZ; }

static void uart_pins(void) {
#if STM32_FAMILY_F7
  RCC_AHB1ENR |= 3u;
  RCC_APB2ENR |= 1u << 4;
  (void)RCC_APB2ENR; /* read back: the clock is on before the peripheral is touched */
  GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18); /* PA9: alternate function 7 */
  GPIOA_AFRH = (GPIOA_AFRH & ~(0xFu << 4)) | (7u << 4);
  GPIOB_MODER = (GPIOB_MODER & ~(3u << 14)) | (2u << 14); /* PB7: alternate function 7 */
  GPIOB_AFRL = (GPIOB_AFRL & ~(0xFu << 28)) | (7u << 28);
#else
  RCC_AHB4ENR |= 1u << 3;
  RCC_APB1LENR |= 1u << 18;
  (void)RCC_APB1LENR;
  GPIOD_MODER = (GPIOD_MODER & ~(0xFu << 16)) | (0xAu << 16); /* PD8, PD9: alternate function 7 */
  GPIOD_AFRH = (GPIOD_AFRH & ~0xFFu) | 0x77u;
#endif
}

void board_init(void) {
  core_hz = board_clock_config();
  uart_pins();
  USART_CR1 = 0u;
  USART_BRR = (BOARD_PCLK_HZ + BOARD_BAUD / 2u) / BOARD_BAUD;
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
