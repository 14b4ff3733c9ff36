#include "drsn_proto.h"

#include <string.h>

uint16_t drsn_crc16(const uint8_t *data, size_t n, uint16_t crc) {
  for (size_t i = 0; i < n; i++) {
    crc ^= (uint16_t)data[i] << 8;
    for (int b = 0; b < 8; b++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

void drsn_send(uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t len) {
  uint8_t head[8] = {0xA5, 0x5A, DRSN_PROTO_VERSION, type, 0, 0, 0, 0};
  put16(head + 4, seq);
  put16(head + 6, len);
  uint16_t crc = drsn_crc16(head + 2, 6, 0xFFFF);
  crc = drsn_crc16(payload, len, crc);
  uint8_t tail[2];
  put16(tail, crc);
  uart_write(head, 8);
  if (len) uart_write(payload, len);
  uart_write(tail, 2);
}

static void send_error(uint16_t seq, uint16_t code, const char *msg) {
  uint8_t p[64];
  size_t n = strlen(msg);
  if (n > sizeof(p) - 2) n = sizeof(p) - 2;
  put16(p, code);
  memcpy(p + 2, msg, n);
  drsn_send(DRSN_ERROR, seq, p, (uint16_t)(n + 2));
}

static void answer(const drsn_info_t *info, uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t len) {
  if (type == DRSN_INFO) {
    uint8_t p[64];
    size_t k = 0, n = strlen(info->name);
    float f;
    p[k++] = DRSN_PROTO_VERSION;
    put32(p + k, info->input_len); k += 4;
    put16(p + k, info->output_len); k += 2;
    f = info->input_scale; memcpy(p + k, &f, 4); k += 4;
    p[k++] = (uint8_t)info->input_zp;
    f = info->output_scale; memcpy(p + k, &f, 4); k += 4;
    p[k++] = (uint8_t)info->output_zp;
    put32(p + k, info->arena_bytes); k += 4;
    put32(p + k, info->clock_hz); k += 4;
    p[k++] = info->counter_is_instructions;
    put32(p + k, info->model_crc); k += 4;
    if (n > sizeof(p) - k) n = sizeof(p) - k;
    memcpy(p + k, info->name, n);
    drsn_send(DRSN_INFO_RSP, seq, p, (uint16_t)(k + n));
  } else if (type == DRSN_INFER) {
    static int8_t logits[256];
    static uint8_t p[5 + 256];
    uint32_t counts = 0;
    if (len != info->input_len) { send_error(seq, 2, "bad input length"); return; }
    if (info->output_len > sizeof(logits)) { send_error(seq, 3, "too many outputs"); return; }
    int status = drsn_proto_infer((const int8_t *)payload, logits, &counts);
    p[0] = (uint8_t)status;
    put32(p + 1, counts);
    memcpy(p + 5, logits, info->output_len);
    drsn_send(DRSN_RESULT, seq, p, (uint16_t)(5 + info->output_len));
#if defined(DRSN_PROFILING)
  } else if (type == DRSN_PROFILE) {
    drsn_prof_answer(seq);
#endif
  } else {
    send_error(seq, 1, "unknown request");
  }
}

void drsn_rx_init(drsn_rx_t *rx, uint8_t *buf, size_t size) {
  rx->buf = buf;
  rx->size = size;
  rx->have = 0;
  rx->dropped = 0;
}

void drsn_rx_consume(drsn_rx_t *rx, size_t n) {
  if (n >= rx->have) { rx->have = 0; return; }
  memmove(rx->buf, rx->buf + n, rx->have - n);
  rx->have -= n;
}

void drsn_rx_push(drsn_rx_t *rx, uint8_t c) {
  if (rx->size == 0) return;
  if (rx->have >= rx->size) drsn_rx_consume(rx, 1); /* only with a buffer under 10 bytes */
  rx->buf[rx->have++] = c;
}

size_t drsn_rx_frame(drsn_rx_t *rx) {
  for (;;) {
    size_t i = 0;
    while (i < rx->have && !(rx->buf[i] == 0xA5 && (i + 1 == rx->have || rx->buf[i + 1] == 0x5A))) i++;
    if (i) drsn_rx_consume(rx, i);
    if (rx->have < 8) return 0;
    size_t total = (size_t)(rx->buf[6] | (rx->buf[7] << 8)) + 10;
    if (total <= rx->size && rx->have < total) return 0;
    if (total > rx->size ||
        drsn_crc16(rx->buf + 2, total - 4, 0xFFFF) != (uint16_t)(rx->buf[total - 2] | (rx->buf[total - 1] << 8))) {
      rx->dropped++;
      drsn_rx_consume(rx, 2); /* resync after this marker */
      continue;
    }
    return total;
  }
}

void drsn_answer(const drsn_info_t *info, const uint8_t *frame, size_t n) {
  uint16_t seq = (uint16_t)(frame[4] | (frame[5] << 8));
  if (frame[2] != DRSN_PROTO_VERSION)
    send_error(seq, 4, "unsupported protocol version");
  else
    answer(info, frame[3], seq, frame + 8, (uint16_t)(n - 10));
}

/* Feeds the UART's bytes to the receiver and answers each complete frame. */
void drsn_poll(const drsn_info_t *info, uint8_t *buf, size_t buf_size) {
  static drsn_rx_t rx;
  int c;
  if (rx.buf != buf || rx.size != buf_size) drsn_rx_init(&rx, buf, buf_size);
  while ((c = uart_getc()) >= 0) {
    size_t n;
    drsn_rx_push(&rx, (uint8_t)c);
    while ((n = drsn_rx_frame(&rx)) != 0) {
      drsn_answer(info, buf, n);
      drsn_rx_consume(&rx, n);
    }
  }
}
