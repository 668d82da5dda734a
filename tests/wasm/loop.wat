;; An infinite loop: must be stopped by fuel or by the wall-time deadline.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))
