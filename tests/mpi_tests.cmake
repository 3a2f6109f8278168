# mpi_tests.cmake -- tests run under mpirun with several ranks (label dist).
#
# include()d from CMakeLists.txt after the test_* loop, so every tests/test_*.c target exists
# and already has its plain (one-process, single backend) ctest run. Here the same binaries run
# again as N MPI ranks. Without MPI (SPRY_MPI=OFF, or no OpenMPI headers) or without a launcher
# nothing is added: the plain runs still cover the single-process backend.
#
# For later tests, two names to reuse:
#   SPRY_HAVE_MPIEXEC  TRUE when the library has the MPI backend and MPIEXEC_EXECUTABLE exists;
#   SPRY_MPIEXEC_ENV   the ENVIRONMENT list every mpirun test needs (below);
# and a function, spry_add_mpi_test(<name> <target> <n_ranks> [args...]), which adds test <name>
# running `mpiexec -n <n_ranks> --oversubscribe <target> [args...]` with that environment, label
# dist and a 120 s timeout.

set(SPRY_HAVE_MPIEXEC FALSE)
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE AND EXISTS "${MPIEXEC_EXECUTABLE}")
  set(SPRY_HAVE_MPIEXEC TRUE)
endif()

# The environment of an mpirun test:
#   OMPI_ALLOW_RUN_AS_ROOT*          OpenMPI refuses to start as root (containers, CI) without both;
#   btl_vader_single_copy_mechanism  "none": the shared-memory transport copies through a buffer
#                                    instead of CMA (process_vm_readv), which containers forbid
#                                    (ptrace restrictions) and which otherwise fails mid-transfer;
#   rmaps_base_oversubscribe         more ranks than cores is fine (also --oversubscribe below).
set(SPRY_MPIEXEC_ENV
  "OMPI_ALLOW_RUN_AS_ROOT=1"
  "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  "OMPI_MCA_btl_vader_single_copy_mechanism=none"
  "OMPI_MCA_rmaps_base_oversubscribe=1")
# Under SPRY_SANITIZE, LeakSanitizer reports what OpenMPI, PMIx and hwloc allocate in MPI_Init
# and never free (~120 KB in ~3000 blocks, none from spry), so leak checking is off for the
# mpirun runs only; ASan's other checks stay on, and the plain runs still check spry for leaks.
if(SPRY_SANITIZE)
  list(APPEND SPRY_MPIEXEC_ENV "ASAN_OPTIONS=detect_leaks=0")
endif()

# spry_add_mpi_test(<name> <target> <n_ranks> [args...]): <target> as <n_ranks> MPI ranks.
# Does nothing when SPRY_HAVE_MPIEXEC is false.
function(spry_add_mpi_test name target n_ranks)
  if(NOT SPRY_HAVE_MPIEXEC)
    return()
  endif()
  add_test(NAME ${name}
    COMMAND ${MPIEXEC_EXECUTABLE} -n ${n_ranks} --oversubscribe
            $<TARGET_FILE:${target}> ${ARGN}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set(env ${SPRY_MPIEXEC_ENV} "SPRY_BUILD_DIR=${CMAKE_BINARY_DIR}")
  set_tests_properties(${name} PROPERTIES LABELS dist TIMEOUT 120 ENVIRONMENT "${env}")
endfunction()

if(SPRY_HAVE_MPIEXEC)
  message(STATUS "spry: mpirun tests with ${MPIEXEC_EXECUTABLE}")
else()
  message(STATUS "spry: no MPI backend or no mpiexec; the mpirun tests are not added")
endif()

# The communicator with 2 and 3 ranks (3: an odd size, uneven splits, a middle rank).
if(TARGET test_comm)
  spry_add_mpi_test(test_comm_np2 test_comm 2)
  spry_add_mpi_test(test_comm_np3 test_comm 3)
endif()
