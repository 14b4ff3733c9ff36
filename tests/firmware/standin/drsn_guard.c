#include "drsn_guard.h"

float drsn_guard_score(const int8_t *taps) {
  (void)taps;
  return -1.0f;
}
