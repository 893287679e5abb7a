;; noop: a wasmcloud:messaging handler that accepts every message and does nothing.
;; The smallest actor: used to measure delivery overhead and instance cost.
(component
  (import "wasmcloud:messaging/types@0.2.0" (instance $types
    (type $msg (record (field "subject" string) (field "body" (list u8)) (field "reply-to" (option string))))
    (export "broker-message" (type (eq $msg)))
  ))
  (alias export $types "broker-message" (type $broker-message))
  (core module $m
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32)
      (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
      (block $ok
        (loop $grow
          (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
          (br $grow)))
      (local.get $ptr))
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
      (global.set $heap (i32.const 4096))
      (i32.store8 (i32.const 2048) (i32.const 0))
      (i32.const 2048))
  )
  (core instance $i (instantiate $m))
  (type $handler-result (result (error string)))
  (func $handle (param "msg" $broker-message) (result $handler-result)
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $handler (export "handle-message" (func $handle)) (export "broker-message" (type $broker-message)))
  (export "wasmcloud:messaging/handler@0.2.0" (instance $handler))
)
