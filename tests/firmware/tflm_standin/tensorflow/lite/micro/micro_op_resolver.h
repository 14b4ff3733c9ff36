/* Stand-in (compile check only, see tests/firmware/tflm_standin/README.md) for tflite-micro's
 * tensorflow/lite/micro/micro_op_resolver.h: the resolver base class MicroInterpreter takes. */
#ifndef DRSN_STANDIN_MICRO_OP_RESOLVER_H_
#define DRSN_STANDIN_MICRO_OP_RESOLVER_H_

namespace tflite {
class MicroOpResolver {
 public:
  virtual ~MicroOpResolver() {}
};
}  // namespace tflite

#endif
