#pragma once

#include <string_view>

namespace parley::wire {

// 3-32 characters of [a-z0-9_.].
bool is_valid_username(std::string_view name);

}  // namespace parley::wire
