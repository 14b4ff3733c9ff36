/* Board: Espressif ESP32-S3 (ESP32-S3-DevKitC-1) with ESP-IDF 5.x.
 *
 * UART: UART0 through the DevKitC's USB-UART bridge (the "UART" USB port: /dev/ttyUSB0 or /dev/ttyACM0):
 *       `serial:///dev/ttyUSB0?baud=115200`, 115200 8N1. Turn the IDF console off or move it
 *       (CONFIG_ESP_CONSOLE_NONE or CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG) so that boot logs do not share the line;
 *       the protocol skips such bytes anyway.
 * Clock: CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ (240 MHz for this target).
 * Counter: the Xtensa CCOUNT register (esp_cpu_get_cycle_count), core cycles.
 * Build: an ESP-IDF component with main_c.c drsn_proto.c board_esp32.c drsn_model.c drsn_kernels.c
 *       (idf_component_register(SRCS ... INCLUDE_DIRS ".")); IDF calls app_main(), which runs main().
 * Flash: `idf.py -p /dev/ttyUSB0 flash`, or `esptool.py --chip esp32s3 -p /dev/ttyUSB0 write_flash 0x0
 *       build/merged-binary.bin`. */
#include <stddef.h>
#include <stdint.h>

#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_system.h"
#include "sdkconfig.h"

#include "drsn_board.h"
#include "drsn_proto.h"

#define PORT UART_NUM_0

int main(void);

void app_main(void) { main(); }

void board_init(void) {
  const uart_config_t cfg = {.baud_rate = 115200, .data_bits = UART_DATA_8_BITS, .parity = UART_PARITY_DISABLE,
                             .stop_bits = UART_STOP_BITS_1, .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
                             .source_clk = UART_SCLK_DEFAULT};
  uart_driver_install(PORT, 8192, 0, 0, NULL, 0);
  uart_param_config(PORT, &cfg);
}

uint32_t board_counter(void) { return (uint32_t)esp_cpu_get_cycle_count(); }
uint32_t board_clock_hz(void) { return CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ * 1000000u; }
uint8_t board_counter_is_instructions(void) { return 0u; }
void board_reset(void) { esp_restart(); }

int uart_getc(void) {
  uint8_t c;
  return uart_read_bytes(PORT, &c, 1, 0) == 1 ? c : -1;
}

void uart_write(const uint8_t *data, size_t n) { uart_write_bytes(PORT, (const char *)data, n); }
