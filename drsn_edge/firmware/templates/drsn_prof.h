/* Per-kernel profiling hooks of the drsn-edge C engine (the profiling firmware only).
 *
 * Built with -DDRSN_PROFILING -DDRSN_HOOKS_HEADER='"drsn_prof.h"' and drsn_prof.c, every kernel call of
 * drsn_infer is bracketed by drsn_prof_begin() / drsn_prof_end(i): the board's raw tick counter is read at
 * both ends and the difference is added to kernel i's total. The hooks are functions (not inline code), so
 * each bracket costs the same few instructions everywhere; drsn_prof.c measures that cost on empty brackets
 * and reports it, and the host takes it off every kernel. The normal firmware never includes this file. */
#ifndef DRSN_PROF_H
#define DRSN_PROF_H
#include <stdint.h>

void drsn_prof_begin(void);
void drsn_prof_end(uint32_t kernel);

#define DRSN_KERNEL_BEGIN(i) drsn_prof_begin()
#define DRSN_KERNEL_END(i) drsn_prof_end((uint32_t)(i))
#endif
