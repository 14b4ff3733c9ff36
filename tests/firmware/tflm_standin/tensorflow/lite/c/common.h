/* Stand-in (compile check only, see tests/firmware/tflm_standin/README.md) for tflite-micro's
 * tensorflow/lite/c/common.h (-> core/c/common.h, c_api_types.h): the types main.cc uses. The tensor is the
 * TF_LITE_STATIC_MEMORY variant that TFLite Micro builds with, reduced to the fields main.cc reads. */
#ifndef DRSN_STANDIN_TFLITE_C_COMMON_H_
#define DRSN_STANDIN_TFLITE_C_COMMON_H_
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt32 = 2, kTfLiteUInt8 = 3, kTfLiteInt8 = 9 } TfLiteType;

typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

typedef union TfLitePtrUnion {
  int32_t *i32;
  float *f;
  uint8_t *uint8;
  int8_t *int8;
  void *data;
} TfLitePtrUnion;

typedef struct TfLiteTensor {
  TfLitePtrUnion data;
  TfLiteIntArray *dims;
  size_t bytes;
  TfLiteType type;
} TfLiteTensor;

#ifdef __cplusplus
}
#endif
#endif
