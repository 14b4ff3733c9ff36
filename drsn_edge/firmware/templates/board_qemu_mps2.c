/* Board: QEMU's Arm MPS2/MPS3 machines (mps2-an385 Cortex-M3, mps2-an386 Cortex-M4, mps2-an500 Cortex-M7,
 * mps2-an505 Cortex-M33, mps3-an547 Cortex-M55; the build passes the machine's UART0 and clock), run as
 *   qemu-system-arm -M mps2-an500 -display none -monitor none -icount shift=0 \
 *     -semihosting-config enable=on,target=native -serial tcp:127.0.0.1:PORT,server=on,wait=on,nodelay=on \
 *     -kernel drsn_fw.elf
 * UART: CMSDK APB UART0 (the first -serial; 0x40004000 on AN385/386/500). Counter: SysTick on the system clock,
 * extended by polling its COUNTFLAG (one wrap is 0.5–0.8 s of virtual time, far longer than an inference).
 * Under -icount shift=0 every instruction advances virtual time by 1 ns, so one SysTick tick at 25 MHz is
 * exactly 40 instructions: board_counter() returns instructions (to within one tick), not cycles — QEMU
 * does not model pipelines, caches or wait states. No interrupt handler runs: interrupts stay masked and the
 * UART's receive interrupt only wakes the core from WFI. */
#include <stddef.h>
#include <stdint.h>

#include "drsn_board.h"
#include "drsn_proto.h"

#define REG(a) (*(volatile uint32_t *)(a))
#ifndef MPS2_UART0 /* the machine's UART0 (secure alias on the Armv8-M boards); the build passes it */
#define MPS2_UART0 0x40004000u
#endif
#ifndef MPS2_SYSCLK_HZ /* SysTick's clock: 25 MHz on AN385/386/500, 20 MHz on AN505, 32 MHz on AN547 */
#define MPS2_SYSCLK_HZ 25000000u
#endif
#define UART0 MPS2_UART0
#define UART_DATA REG(UART0 + 0x00u)
#define UART_STATE REG(UART0 + 0x04u) /* bit 0: TX full, bit 1: RX full */
#define UART_CTRL REG(UART0 + 0x08u)  /* bit 0: TX enable, bit 1: RX enable */
#define UART_INTCLEAR REG(UART0 + 0x0Cu)
#define UART_BAUDDIV REG(UART0 + 0x10u)
#define NVIC_ISER(i) REG(0xE000E100u + 4u * (i))
#define NVIC_ICPR(i) REG(0xE000E280u + 4u * (i))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SCB_AIRCR REG(0xE000ED0Cu)

#define SYSCLK_HZ MPS2_SYSCLK_HZ

static uint32_t wraps;

void board_init(void) {
  UART_BAUDDIV = 16u; /* the smallest divisor the CMSDK UART allows; QEMU does not pace the line */
  __asm__ volatile("cpsid i" ::: "memory");
  UART_CTRL = 3u | (1u << 3); /* TX, RX, RX interrupt: it only wakes the core from WFI (see uart_getc) */
  for (uint32_t i = 0; i < 4u; i++) NVIC_ISER(i) = 0xFFFFFFFFu; /* whichever line the UART's is: only a wake-up */
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0u;
  SYST_CSR = 5u; /* processor clock, enable, no interrupt */
  while (SYST_CVR == 0u) {
  }
  (void)SYST_CSR; /* clears COUNTFLAG */
}

uint32_t board_counter(void) {
  uint32_t v = SYST_CVR;
  if (SYST_CSR & (1u << 16)) { /* wrapped since the last call: count it and re-read past the wrap */
    wraps++;
    v = SYST_CVR;
  }
  uint64_t ticks = ((uint64_t)wraps << 24) + (0x00FFFFFFu - v);
  return (uint32_t)(ticks * 1000u / (SYSCLK_HZ / 1000000u)); /* ns = instructions at -icount shift=0 */
}

uint32_t board_clock_hz(void) { return SYSCLK_HZ; }

#if defined(DRSN_PROFILING)
/* Profiling firmware: SysTick's raw value turned into an up-counter (24 bits); one tick is 1e9 / SYSCLK_HZ
 * instructions under -icount shift=0 (40 at 25 MHz). */
uint32_t board_ticks(void) { return 0x00FFFFFFu - SYST_CVR; }
const uint32_t board_ticks_mask = 0x00FFFFFFu;
uint32_t board_tick_hz(void) { return SYSCLK_HZ; }
#endif
uint8_t board_counter_is_instructions(void) { return 1u; }

void board_reset(void) {
  SCB_AIRCR = 0x05FA0004u; /* VECTKEY | SYSRESETREQ: QEMU reloads the image and reboots */
  for (;;) {
  }
}

/* Waits for a byte asleep: with interrupts masked, WFI still wakes on the pending UART interrupt, whose
 * handler never runs. A sleeping core lets QEMU's I/O thread hand over the next byte at once; a core spinning
 * on the status register gets each byte far later (measured: ~7x slower transfers). */
int uart_getc(void) {
  while (!(UART_STATE & 2u)) {
    __asm__ volatile("wfi" ::: "memory");
    UART_INTCLEAR = 2u;
    for (uint32_t i = 0; i < 4u; i++) NVIC_ICPR(i) = 0xFFFFFFFFu;
  }
  return (int)(UART_DATA & 0xFFu);
}

void uart_write(const uint8_t *data, size_t n) {
  for (size_t i = 0; i < n; i++) {
    while (UART_STATE & 1u) {
    }
    UART_DATA = data[i];
  }
}
