;; relay: a wasmcloud:messaging handler that passes each message on as a request.
;; For each message it sends a request on the subject its handler sees (for `drupelet call
;; relay SUBJECT BODY`, that SUBJECT) with the message's body, through
;; wasmcloud:messaging/consumer `request` (timeout 1000 ms). The reply's body is published to
;; the message's reply-to; a failed request is the handler's error, with the interface's
;; error string (`denied: …`, `timeout: …`). The tests use it as an actor that tries to reach
;; subjects its link may not grant.
(component
  (import "wasmcloud:messaging/types@0.2.0" (instance $types
    (type $msg (record (field "subject" string) (field "body" (list u8)) (field "reply-to" (option string))))
    (export "broker-message" (type (eq $msg)))
  ))
  (alias export $types "broker-message" (type $broker-message))
  (import "wasmcloud:messaging/consumer@0.2.0" (instance $consumer
    (export "broker-message" (type $bm (eq $broker-message)))
    (type $res (result (error string)))
    (type $reqres (result $bm (error string)))
    (export "request" (func (param "subject" string) (param "body" (list u8)) (param "timeout-ms" u32)
                            (result $reqres)))
    (export "publish" (func (param "msg" $bm) (result $res)))
  ))

  (core module $mem
    (memory (export "memory") 1)
    (global $heap (export "heap") (mut i32) (i32.const 4096))
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                 (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
      (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
      (block $ok
        (loop $grow
          (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
          (br $grow)))
      (local.get $ptr))
  )
  (core instance $m (instantiate $mem))
  (alias core export $m "memory" (core memory $memory))
  (alias core export $m "realloc" (core func $realloc))

  (alias export $consumer "request" (func $request))
  (core func $request_lowered (canon lower (func $request) (memory $memory) (realloc $realloc)))
  (alias export $consumer "publish" (func $publish))
  (core func $publish_lowered (canon lower (func $publish) (memory $memory) (realloc $realloc)))

  (core module $relay
    (import "m" "memory" (memory 1))
    (import "m" "heap" (global $heap (mut i32)))
    (import "c" "request" (func $request (param i32 i32 i32 i32 i32 i32)))
    (import "c" "publish" (func $publish (param i32 i32 i32 i32 i32 i32 i32 i32)))
    ;; the handler's result at 2048: 0 = ok, 1 = error with its string at 2052/2056
    (func $fail_with (param $ptr i32) (param $len i32) (result i32)
      (i32.store8 (i32.const 2048) (i32.const 1))
      (i32.store (i32.const 2052) (local.get $ptr))
      (i32.store (i32.const 2056) (local.get $len))
      (global.set $heap (i32.const 4096))
      (i32.const 2048))
    (func (export "handle") (param $sp i32) (param $sl i32) (param $bp i32) (param $bl i32)
                            (param $rd i32) (param $rp i32) (param $rl i32) (result i32)
      ;; the request's result at 1024: tag (0 ok, 1 error), then at 1028 the broker-message
      ;; (subject 1028/1032, body 1036/1040, reply-to 1044…) or the error string (1028/1032)
      (call $request (local.get $sp) (local.get $sl) (local.get $bp) (local.get $bl) (i32.const 1000)
                     (i32.const 1024))
      (if (i32.load8_u (i32.const 1024))
        (then (return (call $fail_with (i32.load (i32.const 1028)) (i32.load (i32.const 1032))))))
      (if (local.get $rd)
        (then
          (call $publish (local.get $rp) (local.get $rl) (i32.load (i32.const 1036)) (i32.load (i32.const 1040))
                         (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1536))
          (if (i32.load8_u (i32.const 1536))
            (then (return (call $fail_with (i32.load (i32.const 1540)) (i32.load (i32.const 1544))))))))
      (i32.store8 (i32.const 2048) (i32.const 0))
      (global.set $heap (i32.const 4096))
      (i32.const 2048))
  )
  (core instance $c (export "request" (func $request_lowered)) (export "publish" (func $publish_lowered)))
  (core instance $r (instantiate $relay (with "m" (instance $m)) (with "c" (instance $c))))

  (type $handler-result (result (error string)))
  (func $handle (param "msg" $broker-message) (result $handler-result)
    (canon lift (core func $r "handle") (memory $memory) (realloc $realloc)))
  (instance $handler (export "handle-message" (func $handle)) (export "broker-message" (type $broker-message)))
  (export "wasmcloud:messaging/handler@0.2.0" (instance $handler))
)
