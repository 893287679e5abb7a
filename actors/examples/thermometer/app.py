"""Thermometer: the hardware demo actor (Python, built with componentize-py).

It only imports interfaces; whichever node its links point at serves them.

- ``timer.<name>`` (from the clock provider), or any message with the body ``read``:
  read a TMP102 temperature sensor over ``wasi:i2c`` (write the pointer register 0x00,
  read two bytes, 12-bit two's complement at 0.0625 °C per bit), then draw the reading
  on the display (``drupelet:hardware/display``) and flush. A message with a reply-to
  gets the reading back as its body (``21.5 C``).
- ``gpio.<button>.falling`` (a press of a button wired to ground, from the gpio
  provider): toggle the LED pin (``drupelet:hardware/gpio``), configuring it as an output
  the first time. The reply, if asked for, is ``led on`` or ``led off``.
- an HTTP request (``wasi:http/incoming-handler``): a fresh reading as plain text,
  ``temperature 21.5 C``; the display is left as it is. A failed reading is a 503 with
  the reason (``i2c write-read 0x48: no-acknowledge: address``).

Config (``wasi:config/store``; all optional):

============== ========== ===============================================
key            default    meaning
============== ========== ===============================================
bus            ``i2c1``   I2C bus the sensor is on
sensor_address ``0x48``   the TMP102's address
led_pin        ``27``     BCM number of the LED's pin
title          ``drupelet`` first line on the display
============== ========== ===============================================

Errors from the host fail the call with the handler's ``err(string)``, naming the
operation and the WIT error case, e.g. ``i2c write-read 0x48: no-acknowledge: address``.
"""

from typing import NoReturn

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import consumer, display, gpio, i2c_bus
from wit_world.imports import logging as wasi_logging
from wit_world.imports import wasi_config_store as config
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from wit_world.imports.wasmcloud_messaging_types import BrokerMessage

LOG_CONTEXT = "thermometer"
TEMPERATURE_REGISTER = 0x00
TITLE_SIZE = 12
READING_SIZE = 24


class Handler(exports.Handler):
    """Exports ``wasmcloud:messaging/handler@0.2.0``."""

    def handle_message(self, msg: BrokerMessage) -> None:
        if msg.subject.startswith("gpio.") and msg.subject.endswith(".falling"):
            reply = toggle_led()
        elif msg.subject.startswith("timer.") or msg.body == b"read":
            reply = show_temperature()
        else:
            wasi_logging.log(wasi_logging.Level.DEBUG, LOG_CONTEXT, f"ignored {msg.subject}")
            return
        if msg.reply_to is not None:
            try:
                consumer.publish(BrokerMessage(subject=msg.reply_to, body=reply.encode(), reply_to=None))
            except Err as e:
                _fail(f"messaging publish {msg.reply_to!r}", e)


class IncomingHandler(exports.IncomingHandler):
    """Exports ``wasi:http/incoming-handler@0.2.0``: the page is the current reading."""

    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        try:
            celsius = read_celsius(_config("bus", "i2c1"), int(_config("sensor_address", "0x48"), 0))
            status, text = 200, f"temperature {celsius:.1f} C\n"
        except Err as e:
            status, text = 503, f"{e.value}\n"
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain; charset=utf-8")]))
        response.set_status_code(status)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)


def read_celsius(bus_name: str, address: int) -> float:
    """One reading of a TMP102, the way a driver for the real chip reads it."""
    try:
        bus = i2c_bus.open(bus_name)
    except Err as e:
        _fail(f"i2c open {bus_name!r}", e)
    with bus:
        try:
            raw = bus.write_read(address, bytes([TEMPERATURE_REGISTER]), 2)
        except Err as e:
            _fail(f"i2c write-read {address:#04x}", e)
    value = ((raw[0] << 8) | raw[1]) >> 4
    if value & 0x800:
        value -= 1 << 12
    return value * 0.0625


def show_temperature() -> str:
    celsius = read_celsius(_config("bus", "i2c1"), int(_config("sensor_address", "0x48"), 0))
    reading = f"{celsius:.1f} C"
    try:
        display.clear()
        display.text(0, 0, _config("title", "drupelet"), TITLE_SIZE, 0xFFFFFF)
        display.text(0, 24, reading, READING_SIZE, 0xFFFFFF)
        display.flush()
    except Err as e:
        _fail("display", e)
    wasi_logging.log(wasi_logging.Level.INFO, LOG_CONTEXT, f"temperature {reading}")
    return reading


def toggle_led() -> str:
    pin = int(_config("led_pin", "27"))
    try:
        level = gpio.toggle(pin)
    except Err:
        # not configured yet (first press since the link was put): an output, lit
        try:
            gpio.configure_output(pin, True)
        except Err as e:
            _fail(f"gpio configure-output {pin}", e)
        level = True
    state = "on" if level else "off"
    wasi_logging.log(wasi_logging.Level.INFO, LOG_CONTEXT, f"led {state}")
    return f"led {state}"


def _config(key: str, default: str) -> str:
    try:
        value = config.get(key)
    except Err as e:
        _fail(f"config get {key!r}", e)
    return default if value is None else value


def _fail(operation: str, err: Err) -> NoReturn:
    """Raise the handler's ``err(string)``: the operation, then the WIT error case."""
    raise Err(f"{operation}: {_describe(err.value)}") from None


def _describe(error: object) -> str:
    """A WIT error value as text: ``Error_Denied("…")`` -> ``denied: …``."""
    if isinstance(error, str):
        return error
    case = type(error).__name__.partition("_")[2] or type(error).__name__
    name = "".join("-" + c.lower() if c.isupper() else c for c in case).lstrip("-")
    payload = getattr(error, "value", None)
    return name if payload is None else f"{name}: {_describe(payload) if not isinstance(payload, (str, int)) else payload}"
