/* drsn-edge serial protocol, device side (see drsn_edge/firmware/protocol.py for the frame format).
 * Portable C99: the board provides uart_getc/uart_write and the inference callback drsn_proto_infer. */
#ifndef DRSN_PROTO_H
#define DRSN_PROTO_H
#include <stddef.h>
#include <stdint.h>

#define DRSN_PROTO_VERSION 1u
enum { DRSN_INFO = 0x01, DRSN_INFER = 0x02, DRSN_PROFILE = 0x03, DRSN_HELLO = 0x80, DRSN_INFO_RSP = 0x81,
       DRSN_RESULT = 0x82, DRSN_PROFILE_RSP = 0x83, DRSN_ERROR = 0xFF };

typedef struct {
  uint32_t input_len;
  uint16_t output_len;
  float input_scale;
  int8_t input_zp;
  float output_scale;
  int8_t output_zp;
  uint32_t arena_bytes;
  uint32_t clock_hz;
  uint8_t counter_is_instructions; /* 0: DWT cycles (real boards), 1: instructions (QEMU -icount) */
  uint32_t model_crc;
  const char *name;
} drsn_info_t;

/* Board hooks. uart_getc returns -1 when no byte is available. */
int uart_getc(void);
void uart_write(const uint8_t *data, size_t n);
/* Run one inference: input int8[input_len] → logits int8[output_len]; *counts = cycles or instructions.
 * Returns 0 on success. */
int drsn_proto_infer(const int8_t *input, int8_t *logits, uint32_t *counts);

#if defined(DRSN_PROFILING)
/* The profiling firmware's answer to PROFILE (drsn_prof.c): per-kernel tick totals since the last request. */
void drsn_prof_answer(uint16_t seq);
#endif

uint16_t drsn_crc16(const uint8_t *data, size_t n, uint16_t crc);
void drsn_send(uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t len);

/* Frame receiver: bytes go in with drsn_rx_push; drsn_rx_frame returns the length of a complete frame with a
 * good CRC (any protocol version) at buf[0], or 0. Noise, bad CRCs and lengths that cannot fit the buffer
 * are skipped by resynchronizing on the next 0xA5 0x5A marker, as the host's Decoder does. */
typedef struct {
  uint8_t *buf;
  size_t size; /* at least 10 + the largest payload to accept */
  size_t have;
  uint32_t dropped;
} drsn_rx_t;
void drsn_rx_init(drsn_rx_t *rx, uint8_t *buf, size_t size);
void drsn_rx_push(drsn_rx_t *rx, uint8_t c);
size_t drsn_rx_frame(drsn_rx_t *rx);
void drsn_rx_consume(drsn_rx_t *rx, size_t n);
/* Answer one complete frame of n bytes (as drsn_rx_frame found it): INFO, INFER, or an ERROR frame for an
 * unknown request, a wrong input length or another protocol version. */
void drsn_answer(const drsn_info_t *info, const uint8_t *frame, size_t n);

/* Read what the UART has and answer complete requests. `buf` must hold input_len + 16 bytes; pass the same
 * buffer on every call. */
void drsn_poll(const drsn_info_t *info, uint8_t *buf, size_t buf_size);
#endif
