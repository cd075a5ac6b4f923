"""The one C extension module of teleport-event-handler-accel."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "teleport_event_handler_accel",
            ["teleport_event_handler_accel.c"],
            extra_compile_args=["-O2"],
        )
    ]
)
