"""Build the optional native hashing module; provmint works (slower) without it."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build extensions, but never fail the install: fall back to pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"provmint: native module not built ({exc}); using pure Python")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"provmint: native module not built ({exc}); using pure Python")


setup(
    ext_modules=[
        Extension(
            "provmint._native",
            sources=["src/provmint/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
