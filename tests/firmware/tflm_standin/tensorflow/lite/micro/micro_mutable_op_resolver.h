/* Stand-in (compile check only, see tests/firmware/tflm_standin/README.md) for tflite-micro's
 * tensorflow/lite/micro/micro_mutable_op_resolver.h: the class template and the Add* methods of the ops
 * drsn-edge registers (drsn_edge/firmware/bundle.py RESOLVER; some take a registration with a default value
 * there, which a call without arguments also matches). */
#ifndef DRSN_STANDIN_MICRO_MUTABLE_OP_RESOLVER_H_
#define DRSN_STANDIN_MICRO_MUTABLE_OP_RESOLVER_H_

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_op_resolver.h"

namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  TfLiteStatus AddAbs();
  TfLiteStatus AddAdd();
  TfLiteStatus AddAveragePool2D();
  TfLiteStatus AddConcatenation();
  TfLiteStatus AddConv2D();
  TfLiteStatus AddDepthwiseConv2D();
  TfLiteStatus AddDequantize();
  TfLiteStatus AddExpandDims();
  TfLiteStatus AddFullyConnected();
  TfLiteStatus AddLogistic();
  TfLiteStatus AddMaxPool2D();
  TfLiteStatus AddMaximum();
  TfLiteStatus AddMean();
  TfLiteStatus AddMinimum();
  TfLiteStatus AddMul();
  TfLiteStatus AddNeg();
  TfLiteStatus AddPad();
  TfLiteStatus AddQuantize();
  TfLiteStatus AddRelu();
  TfLiteStatus AddReshape();
  TfLiteStatus AddSoftmax();
  TfLiteStatus AddSqueeze();
  TfLiteStatus AddStridedSlice();
  TfLiteStatus AddSub();
  TfLiteStatus AddSum();
  TfLiteStatus AddTranspose();
};
}  // namespace tflite

#endif
