/* Stand-in (compile check only, see tests/firmware/tflm_standin/README.md) for tflite-micro's
 * tensorflow/lite/micro/micro_utils.h: the element count of a shape. */
#ifndef DRSN_STANDIN_MICRO_UTILS_H_
#define DRSN_STANDIN_MICRO_UTILS_H_

#include "tensorflow/lite/c/common.h"

namespace tflite {
int ElementCount(const TfLiteIntArray &dims);
}  // namespace tflite

#endif
