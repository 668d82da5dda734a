/* Chimera's host interface for task modules (WASI command modules).
 * chimera_progress(pct): report progress 0..100; the executor publishes it as PROGRESS feedback. */
#ifndef CHIMERA_H
#define CHIMERA_H
__attribute__((import_module("chimera"), import_name("progress"))) void chimera_progress(int pct);
#endif
