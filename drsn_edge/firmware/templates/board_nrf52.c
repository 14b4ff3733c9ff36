/* Board: Nordic nRF52840 (nRF52840 DK; other nRF52 boards: change the pins).
 *
 * UART: UARTE0, TX P0.06 / RX P0.08 — on the DK these go to the on-board J-Link's virtual COM port
 *       (/dev/ttyACM0: `serial:///dev/ttyACM0?baud=115200`). 115200 8N1, no flow control. The UARTE moves
 *       data by EasyDMA only: reception runs byte by byte into a RAM ring (ENDRX→STARTRX shortcut, the next
 *       buffer pointer set at each RXSTARTED), transmission goes through a RAM buffer.
 * Clock: the core always runs at 64 MHz; the 32 MHz crystal (HFXO) is started for an exact baud rate.
 * Counter: DWT CYCCNT, core cycles at 64 MHz.
 * Build: with nrfx's startup file and linker script (gcc_startup_nrf52840.S, nrf52840_xxaa.ld), flags
 *       -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16, plus main_c.c drsn_proto.c board_nrf52.c
 *       and the engine's drsn_model.c drsn_kernels.c.
 * Flash: `nrfjprog --program drsn_fw.hex --sectorerase --verify --reset`, or
 *       `openocd -f interface/jlink.cfg -c "transport select swd" -f target/nrf52.cfg
 *        -c "program drsn_fw.elf verify reset exit"`, or copy the .hex onto the DK's JLINK drive. */
#include <stddef.h>
#include <stdint.h>

#include "drsn_board.h"
#include "drsn_proto.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define CLOCK_HFCLKSTART REG(0x40000000u)
#define CLOCK_HFCLKSTARTED REG(0x40000100u)
#define UARTE0 0x40002000u
#define U_STARTRX REG(UARTE0 + 0x000u)
#define U_STARTTX REG(UARTE0 + 0x008u)
#define U_ENDRX REG(UARTE0 + 0x110u)
#define U_ENDTX REG(UARTE0 + 0x120u)
#define U_RXSTARTED REG(UARTE0 + 0x14Cu)
#define U_SHORTS REG(UARTE0 + 0x200u) /* bit 5: ENDRX -> STARTRX */
#define U_ENABLE REG(UARTE0 + 0x500u) /* 8: UARTE */
#define U_PSEL_RTS REG(UARTE0 + 0x508u)
#define U_PSEL_TXD REG(UARTE0 + 0x50Cu)
#define U_PSEL_CTS REG(UARTE0 + 0x510u)
#define U_PSEL_RXD REG(UARTE0 + 0x514u)
#define U_BAUDRATE REG(UARTE0 + 0x524u)
#define U_RXD_PTR REG(UARTE0 + 0x534u)
#define U_RXD_MAXCNT REG(UARTE0 + 0x538u)
#define U_TXD_PTR REG(UARTE0 + 0x544u)
#define U_TXD_MAXCNT REG(UARTE0 + 0x548u)
#define U_CONFIG REG(UARTE0 + 0x56Cu)
#define GPIO_P0_DIRSET REG(0x50000518u)
#define GPIO_P0_OUTSET REG(0x50000508u)
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define SCB_AIRCR REG(0xE000ED0Cu)

#define PIN_TX 6u
#define PIN_RX 8u
#define BAUD_115200 0x01D7E000u
#define RING 256u

static volatile uint8_t ring[RING];
static uint32_t started, ended, taken; /* RXSTARTED / ENDRX events seen, bytes handed out */

static void rx_service(void) {
  if (U_RXSTARTED) { /* transfer `started` began: point the double-buffered pointer at the next slot */
    U_RXSTARTED = 0u;
    started++;
    U_RXD_PTR = (uint32_t)(uintptr_t)&ring[started % RING];
  }
  if (U_ENDRX) {
    U_ENDRX = 0u;
    ended++;
  }
}

void board_init(void) {
  CLOCK_HFCLKSTART = 1u;
  while (!CLOCK_HFCLKSTARTED) {
  }
  GPIO_P0_OUTSET = 1u << PIN_TX;
  GPIO_P0_DIRSET = 1u << PIN_TX;
  U_PSEL_TXD = PIN_TX;
  U_PSEL_RXD = PIN_RX;
  U_PSEL_RTS = 0xFFFFFFFFu; /* disconnected */
  U_PSEL_CTS = 0xFFFFFFFFu;
  U_BAUDRATE = BAUD_115200;
  U_CONFIG = 0u; /* 8N1, no flow control */
  U_ENABLE = 8u;
  U_RXD_PTR = (uint32_t)(uintptr_t)&ring[0];
  U_RXD_MAXCNT = 1u;
  U_SHORTS = 1u << 5;
  U_STARTRX = 1u;
  DEMCR |= 1u << 24;
  DWT_CYCCNT = 0u;
  DWT_CTRL |= 1u;
}

uint32_t board_counter(void) { return DWT_CYCCNT; }
uint32_t board_clock_hz(void) { return 64000000u; }
uint8_t board_counter_is_instructions(void) { return 0u; }

void board_reset(void) {
  SCB_AIRCR = 0x05FA0004u;
  for (;;) {
  }
}

int uart_getc(void) {
  rx_service();
  if (taken == ended) return -1;
  return ring[taken++ % RING];
}

void uart_write(const uint8_t *data, size_t n) {
  static uint8_t tx[64]; /* EasyDMA reads RAM only */
  while (n) {
    size_t k = n < sizeof tx ? n : sizeof tx;
    for (size_t i = 0; i < k; i++) tx[i] = data[i];
    U_TXD_PTR = (uint32_t)(uintptr_t)tx;
    U_TXD_MAXCNT = (uint32_t)k;
    U_ENDTX = 0u;
    U_STARTTX = 1u;
    while (!U_ENDTX) rx_service(); /* keep receiving while sending */
    data += k;
    n -= k;
  }
}
