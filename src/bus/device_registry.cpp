#include "bus/device_registry.hpp"

#include <utility>

namespace parley::bus {

std::shared_ptr<endpoint> device_registry::attach(device_id device, const std::string& username,
                                                  std::shared_ptr<endpoint> ep,
                                                  std::uint64_t attached_ms) {
  std::lock_guard lock(mutex_);
  auto [it, fresh] = devices_.try_emplace(device);
  auto& e = it->second;
  auto previous = e.ep.lock();
  if (fresh || e.username != username) {
    if (!fresh) unlink_user(it);
    e.username = username;
    by_user_.emplace(std::string_view(e.username), device);
  }
  e.ep = ep;
  e.attached_ms = attached_ms;
  if (previous == ep) return nullptr;
  return previous;
}

void device_registry::unlink_user(devices_map::const_iterator it) {
  auto [at, end] = by_user_.equal_range(it->second.username);
  for (; at != end; ++at) {
    if (at->second == it->first) {
      by_user_.erase(at);
      return;
    }
  }
}

bool device_registry::detach(device_id device, const endpoint* ep) {
  std::lock_guard lock(mutex_);
  auto it = devices_.find(device);
  if (it == devices_.end()) return false;
  auto current = it->second.ep.lock();
  if (current && current.get() != ep) return false;  // a newer connection owns the device now
  unlink_user(it);
  devices_.erase(it);
  return true;
}

std::shared_ptr<endpoint> device_registry::find(device_id device) const {
  std::lock_guard lock(mutex_);
  auto it = devices_.find(device);
  return it == devices_.end() ? nullptr : it->second.ep.lock();
}

std::shared_ptr<endpoint> device_registry::find_attached_by(device_id device,
                                                            std::uint64_t at_ms) const {
  std::lock_guard lock(mutex_);
  auto it = devices_.find(device);
  if (it == devices_.end() || it->second.attached_ms > at_ms) return nullptr;
  return it->second.ep.lock();
}

device_registry::endpoints device_registry::find_each(const std::vector<device_id>& devices,
                                                      std::vector<device_id>* absent) const {
  endpoints out;
  out.reserve(devices.size());
  std::lock_guard lock(mutex_);
  for (device_id d : devices) {
    auto it = devices_.find(d);
    auto ep = it == devices_.end() ? nullptr : it->second.ep.lock();
    if (ep) {
      out.push_back(std::move(ep));
    } else if (absent) {
      absent->push_back(d);
    }
  }
  return out;
}

device_registry::endpoints device_registry::of_user(const std::string& username) const {
  endpoints out;
  std::lock_guard lock(mutex_);
  auto [at, end] = by_user_.equal_range(username);
  for (; at != end; ++at) {
    auto it = devices_.find(at->second);
    if (it == devices_.end()) continue;
    if (auto ep = it->second.ep.lock()) out.push_back(std::move(ep));
  }
  return out;
}

device_registry::endpoints device_registry::all() const {
  endpoints out;
  std::lock_guard lock(mutex_);
  out.reserve(devices_.size());
  for (const auto& [_, e] : devices_) {
    if (auto ep = e.ep.lock()) out.push_back(std::move(ep));
  }
  return out;
}

std::vector<device_id> device_registry::ids() const {
  std::vector<device_id> out;
  std::lock_guard lock(mutex_);
  out.reserve(devices_.size());
  for (const auto& [d, _] : devices_) out.push_back(d);
  return out;
}

std::size_t device_registry::size() const {
  std::lock_guard lock(mutex_);
  return devices_.size();
}

}  // namespace parley::bus
