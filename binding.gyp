{
  "targets": [
    {
      "target_name": "perp_native",
      "sources": [
        "native/binding.cc",
        "native/pool.cc",
        "native/cpu.cc",
        "native/gemm.cc",
        "native/kernels.cc",
        "native/isa_scalar.cc",
        "native/isa_avx2.cc",
        "native/isa_avx512.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wno-unused-function", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
      "ldflags": ["-pthread"]
    }
  ]
}
