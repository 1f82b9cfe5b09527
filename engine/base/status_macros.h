// Status propagation macros. Debian's Abseil (20220623) predates absl's own, so we keep ours,
// prefixed to avoid clashing with any that a dependency may define.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MODRWKV_STATUS_CONCAT_INNER_(a, b) a##b
#define MODRWKV_STATUS_CONCAT_(a, b) MODRWKV_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define MODRWKV_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status modrwkv_status_ = (expr);           \
    if (!modrwkv_status_.ok()) return modrwkv_status_; \
  } while (0)

// `MODRWKV_ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value of an absl::StatusOr or returns
// its error from the enclosing function.
#define MODRWKV_ASSIGN_OR_RETURN(lhs, expr) \
  MODRWKV_ASSIGN_OR_RETURN_IMPL_(MODRWKV_STATUS_CONCAT_(modrwkv_statusor_, __LINE__), lhs, expr)

#define MODRWKV_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()
