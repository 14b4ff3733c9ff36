/* Stand-in (compile check only, see tests/firmware/tflm_standin/README.md) for tflite-micro's
 * tensorflow/lite/micro/micro_interpreter.h: the constructor (arena form) and the methods main.cc calls. */
#ifndef DRSN_STANDIN_MICRO_INTERPRETER_H_
#define DRSN_STANDIN_MICRO_INTERPRETER_H_

#include <cstddef>
#include <cstdint>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace tflite {
class MicroResourceVariables;
class MicroProfilerInterface;

class MicroInterpreter {
 public:
  MicroInterpreter(const Model *model, const MicroOpResolver &op_resolver, uint8_t *tensor_arena,
                   size_t tensor_arena_size, MicroResourceVariables *resource_variables = nullptr,
                   MicroProfilerInterface *profiler = nullptr, bool preserve_all_tensors = false);
  ~MicroInterpreter();
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor *input(size_t index);
  TfLiteTensor *output(size_t index);
  size_t outputs_size() const;
};
}  // namespace tflite

#endif
