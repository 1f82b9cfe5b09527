# The CUDA language for the CUDA backend (engine/cuda) and the encoders' GPU layers
# (encoders/cuda): included by the top-level CMakeLists.txt when MODRWKV_CUDA is ON, so that the
# language is enabled in the directory above every target that compiles or links CUDA code.

# sm_80 (A100) and sm_90 (H100/H200); override with -DCMAKE_CUDA_ARCHITECTURES=... or CUDAARCHS.
# Must be set before enable_language(CUDA), which would otherwise pick the compiler's default.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
  set(CMAKE_CUDA_ARCHITECTURES "80;90")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

# CUDA sources are C++20 like the rest of the tree (nvcc 12+ supports it). CMake 3.25 predates
# nvcc's C++20 flag and, with CUDA_STANDARD unset, falls back to CXX_STANDARD (20) and fails at
# generate time; teach it the flag, as newer CMake releases do.
if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION AND CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA"
   AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)
# The CUDA runtime is linked statically (CUDA::cudart_static below, as nvcc does by default): the
# server binary, which links this backend, then needs no CUDA library to start on a CPU-only host
# (its CPU image installs none), and cuBLAS, opened at run time, brings no second runtime (it
# needs only the driver).
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)

# The top-level -Wall/-Wextra are host-compiler flags that nvcc does not take as they are: a
# folder with CUDA sources calls this to keep them for C++ sources and forward them to the host
# compiler for CUDA sources.
function(modrwkv_cuda_directory_flags)
  get_directory_property(_modrwkv_opts COMPILE_OPTIONS)
  set(_modrwkv_cuda_dir_opts)
  foreach(opt ${_modrwkv_opts})
    list(APPEND _modrwkv_cuda_dir_opts
      "$<$<COMPILE_LANGUAGE:CXX>:${opt}>" "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${opt}>")
  endforeach()
  set_directory_properties(PROPERTIES COMPILE_OPTIONS "${_modrwkv_cuda_dir_opts}")
endfunction()
