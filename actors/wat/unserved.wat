;; Imports an interface no provider on a drupelet node serves: starting it must be refused.
(component
  (import "acme:teleport/beam@1.0.0" (instance $beam
    (export "energize" (func (param "who" u32)))
  ))
  (import "wasi:keyvalue/store@0.2.0-draft2" (instance $kv2
    (export "bucket" (type (sub resource)))
  ))
)
