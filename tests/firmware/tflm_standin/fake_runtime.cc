// A stand-in for TFLite Micro's runtime, for running the generated main.cc on this machine in tests: it
// defines what the stand-in headers declare (tests/firmware/tflm_standin/README.md), not TFLite Micro's kernels.
// Its "model" copies the input window into the outputs, so a test knows every output value: output 0 (the
// logits) holds input[0 .. FAKE_LOGITS), tap output i (1..n) holds input[64·i .. 64·i + dims[i-1]).
// Build flags: -DFAKE_INPUT_LEN=…, -DFAKE_LOGITS=…, -DFAKE_TAP_DIMS=4,8,3 (empty: a model without taps).
#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_utils.h"

#ifndef FAKE_TAP_DIMS
#define FAKE_TAP_DIMS
#endif

namespace {
constexpr int kTapDims[] = {0, FAKE_TAP_DIMS};  // a leading 0: an empty list still compiles
constexpr size_t kTaps = sizeof(kTapDims) / sizeof(kTapDims[0]) - 1;
constexpr int kTapStride = 64;
static_assert(kTaps * kTapStride + kTapStride <= FAKE_INPUT_LEN, "taps must fit the input window");
static_assert(FAKE_LOGITS <= kTapStride, "logits must fit their buffer");
constexpr bool taps_fit() {
  for (size_t i = 1; i <= kTaps; i++)
    if (kTapDims[i] > kTapStride) return false;
  return true;
}
static_assert(taps_fit(), "each tap must fit its buffer");

int8_t input_data[FAKE_INPUT_LEN];
int8_t output_data[1 + kTaps][kTapStride];
int shapes[2 + kTaps][3];  // TfLiteIntArray layout: size, then the dimensions
TfLiteTensor input_tensor;
TfLiteTensor output_tensors[1 + kTaps];

TfLiteIntArray *shape(int k, int n) {
  shapes[k][0] = 2;
  shapes[k][1] = 1;
  shapes[k][2] = n;
  return reinterpret_cast<TfLiteIntArray *>(shapes[k]);
}

void set_up(TfLiteTensor *t, int8_t *data, TfLiteIntArray *dims) {
  t->data.int8 = data;
  t->dims = dims;
  t->bytes = static_cast<size_t>(dims->data[1]);
  t->type = kTfLiteInt8;
}
}  // namespace

namespace tflite {

const Model *GetModel(const void *buf) { return static_cast<const Model *>(buf); }

int ElementCount(const TfLiteIntArray &dims) {
  int n = 1;
  for (int i = 0; i < dims.size; i++) n *= dims.data[i];
  return n;
}

MicroInterpreter::MicroInterpreter(const Model *, const MicroOpResolver &, uint8_t *, size_t, MicroResourceVariables *,
                                   MicroProfilerInterface *, bool) {}

MicroInterpreter::~MicroInterpreter() {}

TfLiteStatus MicroInterpreter::AllocateTensors() {
  set_up(&input_tensor, input_data, shape(0, FAKE_INPUT_LEN));
  set_up(&output_tensors[0], output_data[0], shape(1, FAKE_LOGITS));
  for (size_t i = 1; i <= kTaps; i++) set_up(&output_tensors[i], output_data[i], shape(1 + i, kTapDims[i]));
  return kTfLiteOk;
}

TfLiteStatus MicroInterpreter::Invoke() {
  for (int k = 0; k < FAKE_LOGITS; k++) output_data[0][k] = input_data[k];
  for (size_t i = 1; i <= kTaps; i++)
    for (int j = 0; j < kTapDims[i]; j++) output_data[i][j] = input_data[kTapStride * i + j];
  return kTfLiteOk;
}

TfLiteTensor *MicroInterpreter::input(size_t index) { return index == 0 ? &input_tensor : nullptr; }

TfLiteTensor *MicroInterpreter::output(size_t index) { return index <= kTaps ? &output_tensors[index] : nullptr; }

size_t MicroInterpreter::outputs_size() const { return 1 + kTaps; }

}  // namespace tflite
