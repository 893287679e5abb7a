;; led: a wasmcloud:messaging handler that toggles GPIO pin 27 on every message, through
;; drupelet:hardware/gpio. The first message configures the pin as an output (high).
;; Used by `drupelet bench` for the latency from a button edge to the LED write, and by
;; tests. A gpio error fails the message with the handler's error "gpio".
(component
  (import "wasmcloud:messaging/types@0.2.0" (instance $types
    (type $msg (record (field "subject" string) (field "body" (list u8)) (field "reply-to" (option string))))
    (export "broker-message" (type (eq $msg)))
  ))
  (alias export $types "broker-message" (type $broker-message))
  (import "drupelet:hardware/gpio@0.1.0" (instance $gpio
    (type $error (variant (case "denied" string) (case "busy" string) (case "not-found" string) (case "io" string)))
    (export "error" (type $error' (eq $error)))
    (type $unit-result (result (error $error')))
    (type $bool-result (result bool (error $error')))
    (export "configure-output" (func (param "pin" u8) (param "initial" bool) (result $unit-result)))
    (export "toggle" (func (param "pin" u8) (result $bool-result)))
  ))
  (alias export $gpio "configure-output" (func $configure-output))
  (alias export $gpio "toggle" (func $toggle))

  (core module $mem
    (memory (export "memory") 1)
    (global $heap (export "heap") (mut i32) (i32.const 4096))
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
    (data (i32.const 256) "gpio")
  )
  (core instance $m (instantiate $mem))
  (alias core export $m "memory" (core memory $memory))
  (alias core export $m "realloc" (core func $realloc))
  (core func $configure_lowered (canon lower (func $configure-output) (memory $memory) (realloc $realloc)))
  (core func $toggle_lowered (canon lower (func $toggle) (memory $memory) (realloc $realloc)))

  (core module $led
    (import "m" "memory" (memory 1))
    (import "m" "heap" (global $heap (mut i32)))
    (import "gpio" "configure-output" (func $configure (param i32 i32 i32)))
    (import "gpio" "toggle" (func $toggle (param i32 i32)))
    (global $configured (mut i32) (i32.const 0))
    ;; handle(msg) -> result<_, string>: returns a pointer to the result at 2048
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
      (global.set $heap (i32.const 4096))
      (if (global.get $configured)
        (then (call $toggle (i32.const 27) (i32.const 1024)))
        (else
          (call $configure (i32.const 27) (i32.const 1) (i32.const 1024))
          (if (i32.eqz (i32.load8_u (i32.const 1024))) (then (global.set $configured (i32.const 1))))))
      (if (i32.load8_u (i32.const 1024))
        (then ;; err: the handler's error string "gpio"
          (i32.store8 (i32.const 2048) (i32.const 1))
          (i32.store (i32.const 2052) (i32.const 256))
          (i32.store (i32.const 2056) (i32.const 4)))
        (else (i32.store8 (i32.const 2048) (i32.const 0))))
      (i32.const 2048))
  )
  (core instance $i (instantiate $led
    (with "m" (instance $m))
    (with "gpio" (instance (export "configure-output" (func $configure_lowered)) (export "toggle" (func $toggle_lowered))))))
  (type $handler-result (result (error string)))
  (func $handle (param "msg" $broker-message) (result $handler-result)
    (canon lift (core func $i "handle") (memory $memory) (realloc $realloc)))
  (instance $handler (export "handle-message" (func $handle)) (export "broker-message" (type $broker-message)))
  (export "wasmcloud:messaging/handler@0.2.0" (instance $handler))
)
