/* Host driver for fuzzing the device side of the protocol (drsn_proto.c). Reads records from stdin —
 * u32 LE length + bytes, length 0xFFFFFFFF to stop — and for each one, with a fresh receiver of
 * argv[1] bytes, prints one line per frame it accepts ("F ver type seq payload-hex"), has the device
 * answer it (INFO / INFER of 16 inputs, errors otherwise) and prints the answer's type and sequence
 * number ("A type seq"), then "E dropped". Built with the sanitizers, so a memory error aborts the run. */
#include <stdio.h>
#include <stdlib.h>

#include "drsn_proto.h"

int uart_getc(void) { return -1; }
void uart_write(const uint8_t *data, size_t n) { /* drsn_send writes the 8-byte header first */
  if (n == 8 && data[0] == 0xA5 && data[1] == 0x5A)
    printf("A %u %u\n", data[3], (unsigned)(data[4] | (data[5] << 8)));
}
int drsn_proto_infer(const int8_t *input, int8_t *logits, uint32_t *counts, float *guard_score) {
  for (int k = 0; k < 4; k++) logits[k] = input[k];
  *counts = 1;
  *guard_score = (float)input[4];
  return 0;
}

static int read_u32(uint32_t *v) {
  uint8_t b[4];
  if (fread(b, 1, 4, stdin) != 4) return 0;
  *v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
  return 1;
}

int main(int argc, char **argv) {
  size_t size = argc > 1 ? (size_t)atol(argv[1]) : 2064;
  uint8_t *buf = malloc(size ? size : 1);
  uint8_t *data = NULL;
  uint32_t n;
  const drsn_info_t info = {16, 4, 0.5f, 0, 0.25f, 0, 0, 1000000u, 0, 0x1234u, "fuzz", 4, 0.0f};
  while (read_u32(&n) && n != 0xFFFFFFFFu) {
    data = realloc(data, n ? n : 1);
    if (fread(data, 1, n, stdin) != n) return 2;
    drsn_rx_t rx;
    drsn_rx_init(&rx, buf, size);
    for (uint32_t i = 0; i < n; i++) {
      size_t len;
      drsn_rx_push(&rx, data[i]);
      while ((len = drsn_rx_frame(&rx)) != 0) {
        printf("F %u %u %u ", rx.buf[2], rx.buf[3], (unsigned)(rx.buf[4] | (rx.buf[5] << 8)));
        for (size_t k = 8; k < len - 2; k++) printf("%02x", rx.buf[k]);
        printf("\n");
        drsn_answer(&info, rx.buf, len);
        drsn_rx_consume(&rx, len);
      }
    }
    printf("E %u\n", (unsigned)rx.dropped);
    fflush(stdout);
  }
  free(buf);
  free(data);
  return 0;
}
