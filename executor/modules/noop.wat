;; noop: the trivial module (benchmarks, smoke tests): starts and returns at once.
(module
  (memory (export "memory") 1)
  (func (export "_start")))
