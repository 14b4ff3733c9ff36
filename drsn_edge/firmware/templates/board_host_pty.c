/* Board: the host itself (Linux). The same firmware sources built with the host's cc run as a process that
 * speaks the protocol on stdin/stdout, or, with DRSN_UART=pty, on a new pseudo-terminal whose path
 * (/dev/pts/N) it prints as the first line on stdout — to the host it then looks like a board's USB serial
 * port (`drsn-edge check --device serial:///dev/pts/N`). Counter: CLOCK_MONOTONIC in ns, reported as cycles
 * of a 1 GHz clock. board_reset() re-executes the process on the same pseudo-terminal, as a board reboots.
 *   cc -O2 -D_GNU_SOURCE -I. main_c.c drsn_proto.c board_host_pty.c drsn_model.c drsn_kernels.c -o drsn_fw */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "drsn_board.h"
#include "drsn_proto.h"

static int rx_fd = 0, tx_fd = 1, hold_fd = -1;

static int env_fd(const char *name) {
  const char *v = getenv(name);
  return v ? atoi(v) : -1;
}

static void open_pty(void) {
  int m = posix_openpt(O_RDWR | O_NOCTTY);
  if (m < 0 || grantpt(m) || unlockpt(m)) { perror("posix_openpt"); exit(3); }
  const char *path = ptsname(m);
  int s = path ? open(path, O_RDWR | O_NOCTTY) : -1; /* held open: the master never sees a hang-up */
  struct termios t;
  if (s < 0 || tcgetattr(s, &t)) { perror("pty"); exit(3); }
  cfmakeraw(&t);
  tcsetattr(s, TCSANOW, &t);
  rx_fd = tx_fd = m;
  hold_fd = s;
  printf("%s\n", path);
  fflush(stdout);
}

void board_init(void) {
  const char *mode = getenv("DRSN_UART");
  if (env_fd("DRSN_UART_FD") >= 0) { /* after board_reset() */
    rx_fd = tx_fd = env_fd("DRSN_UART_FD");
    hold_fd = env_fd("DRSN_UART_HOLD");
  } else if (mode && strcmp(mode, "pty") == 0) {
    open_pty();
  }
}

uint32_t board_counter(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

uint32_t board_clock_hz(void) { return 1000000000u; }
uint8_t board_counter_is_instructions(void) { return 0u; }

void board_reset(void) {
  char a[16], b[16];
  if (rx_fd != tx_fd) exit(0); /* stdin/stdout: a reset ends the session */
  snprintf(a, sizeof a, "%d", rx_fd);
  snprintf(b, sizeof b, "%d", hold_fd);
  setenv("DRSN_UART_FD", a, 1);
  setenv("DRSN_UART_HOLD", b, 1);
  execl("/proc/self/exe", "drsn_fw", (char *)NULL);
  exit(3);
}

int uart_getc(void) {
  static uint8_t buf[4096];
  static ssize_t n = 0, i = 0;
  if (i >= n) {
    n = read(rx_fd, buf, sizeof buf); /* blocks: the host firmware sleeps between requests */
    i = 0;
    if (n <= 0) exit(0);            /* end of input: the host went away */
  }
  return buf[i++];
}

void uart_write(const uint8_t *data, size_t n) {
  while (n) {
    ssize_t k = write(tx_fd, data, n);
    if (k <= 0) exit(0);
    data += k;
    n -= (size_t)k;
  }
}
