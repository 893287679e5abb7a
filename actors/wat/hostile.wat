;; hostile: an actor that misbehaves on request, for the tests and `drupelet bench`.
;; A message whose body starts with
;;   "spin" loops until its call deadline;
;;   "logs" logs its body (wasi:logging, level info, context "hostile") until its deadline;
;;   "publ" publishes its body on the subject "hostile.flood" until its deadline (or until a
;;          publish fails);
;; any other message with a reply-to is echoed there, like the echo actor (without logging).
(component
  (import "wasmcloud:messaging/types@0.2.0" (instance $types
    (type $msg (record (field "subject" string) (field "body" (list u8)) (field "reply-to" (option string))))
    (export "broker-message" (type (eq $msg)))
  ))
  (alias export $types "broker-message" (type $broker-message))
  (import "wasmcloud:messaging/consumer@0.2.0" (instance $consumer
    (export "broker-message" (type $bm (eq $broker-message)))
    (type $res (result (error string)))
    (export "publish" (func (param "msg" $bm) (result $res)))
  ))

  (import "wasi:logging/logging@0.1.0-draft" (instance $logging
    (type $level (enum "trace" "debug" "info" "warn" "error" "critical"))
    (export "level" (type $level' (eq $level)))
    (export "log" (func (param "level" $level') (param "context" string) (param "message" string)))
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

  (alias export $consumer "publish" (func $publish))
  (core func $publish_lowered (canon lower (func $publish) (memory $memory) (realloc $realloc)))
  (alias export $logging "log" (func $log))
  (core func $log_lowered (canon lower (func $log) (memory $memory)))

  (core module $hostile
    (import "m" "memory" (memory 1))
    (import "m" "heap" (global $heap (mut i32)))
    (import "c" "publish" (func $publish (param i32 i32 i32 i32 i32 i32 i32 i32)))
    (import "c" "log" (func $log (param i32 i32 i32 i32 i32)))
    (data (i32.const 3000) "hostile")
    (data (i32.const 3100) "hostile.flood")
    (func $starts_with (param $p i32) (param $l i32) (param $w i32) (result i32)
      (if (result i32) (i32.lt_u (local.get $l) (i32.const 4))
        (then (i32.const 0))
        (else (i32.eq (i32.load align=1 (local.get $p)) (local.get $w)))))
    (func (export "handle") (param $sp i32) (param $sl i32) (param $bp i32) (param $bl i32)
                            (param $rd i32) (param $rp i32) (param $rl i32) (result i32)
      ;; "spin"
      (if (call $starts_with (local.get $bp) (local.get $bl) (i32.const 0x6e697073))
        (then (loop $forever (br $forever))))
      ;; "logs"
      (if (call $starts_with (local.get $bp) (local.get $bl) (i32.const 0x73676f6c))
        (then (loop $again
          (call $log (i32.const 2) (i32.const 3000) (i32.const 7) (local.get $bp) (local.get $bl))
          (br $again))))
      ;; "publ"
      (if (call $starts_with (local.get $bp) (local.get $bl) (i32.const 0x6c627570))
        (then (loop $again
          (call $publish (i32.const 3100) (i32.const 13) (local.get $bp) (local.get $bl)
                         (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1024))
          (br_if $again (i32.eqz (i32.load8_u (i32.const 1024)))))))
      (if (local.get $rd)
        (then
          (call $publish (local.get $rp) (local.get $rl) (local.get $bp) (local.get $bl)
                         (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1024))))
      (i32.store8 (i32.const 2048) (i32.const 0))
      (global.set $heap (i32.const 4096))
      (i32.const 2048))
  )
  (core instance $c (export "publish" (func $publish_lowered)) (export "log" (func $log_lowered)))
  (core instance $e (instantiate $hostile (with "m" (instance $m)) (with "c" (instance $c))))

  (type $handler-result (result (error string)))
  (func $handle (param "msg" $broker-message) (result $handler-result)
    (canon lift (core func $e "handle") (memory $memory) (realloc $realloc)))
  (instance $handler (export "handle-message" (func $handle)) (export "broker-message" (type $broker-message)))
  (export "wasmcloud:messaging/handler@0.2.0" (instance $handler))
)
