/* Profiling hooks for bench_main.c (per-kernel SysTick ticks). */
void bench_kernel_begin(int i);
void bench_kernel_end(int i);
#define DRSN_KERNEL_BEGIN(i) bench_kernel_begin(i)
#define DRSN_KERNEL_END(i) bench_kernel_end(i)
