// A fresh directory under the system's temp directory for one test, removed with everything in
// it when the object goes. The random suffix keeps tests that run in parallel apart.
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>

namespace parley::test_support {

class temp_dir {
 public:
  explicit temp_dir(std::string_view prefix) {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / (std::string(prefix) + std::to_string(rd()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ignored;  // a destructor must not throw; a leftover temp dir is harmless
    std::filesystem::remove_all(path_, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace parley::test_support
