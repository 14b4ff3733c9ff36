/* Stand-in (compile check only, see tests/firmware/tflm_standin/README.md) for tflite-micro's
 * tensorflow/lite/schema/schema_generated.h: the model type and GetModel (inline over flatbuffers there). */
#ifndef DRSN_STANDIN_SCHEMA_GENERATED_H_
#define DRSN_STANDIN_SCHEMA_GENERATED_H_

namespace tflite {
struct Model;
const Model *GetModel(const void *buf);
}  // namespace tflite

#endif
