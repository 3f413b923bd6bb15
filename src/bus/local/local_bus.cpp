#include "bus/local/local_bus.hpp"

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace parley::bus {

void local_bus::attach(device_id device, const std::string& username,
                       std::shared_ptr<endpoint> ep) {
  std::shared_ptr<endpoint> previous;
  {
    std::lock_guard lock(mutex_);
    auto& e = devices_[device];
    previous = e.ep.lock();
    e.username = username;
    e.ep = ep;
    by_user_[username].insert(device);
  }
  if (previous && previous != ep) previous->replaced();
}

void local_bus::detach(device_id device, const endpoint* ep) {
  std::lock_guard lock(mutex_);
  auto it = devices_.find(device);
  if (it == devices_.end()) return;
  auto current = it->second.ep.lock();
  if (current && current.get() != ep) return;  // a newer connection owns the device now
  auto user = by_user_.find(it->second.username);
  if (user != by_user_.end()) {
    user->second.erase(device);
    if (user->second.empty()) by_user_.erase(user);
  }
  devices_.erase(it);
}

std::shared_ptr<endpoint> local_bus::find(device_id device) const {
  std::lock_guard lock(mutex_);
  auto it = devices_.find(device);
  return it == devices_.end() ? nullptr : it->second.ep.lock();
}

void local_bus::deliver_message(const std::vector<device_id>& devices, shared_envelope e) {
  // One lock for the whole list (a group's fan-out names up to 1,024 members' devices), and
  // the pushes outside it.
  std::vector<std::shared_ptr<endpoint>> targets;
  targets.reserve(devices.size());
  {
    std::lock_guard lock(mutex_);
    for (device_id d : devices) {
      auto it = devices_.find(d);
      if (it == devices_.end()) continue;
      if (auto ep = it->second.ep.lock()) targets.push_back(std::move(ep));
    }
  }
  for (auto& ep : targets) ep->push_message(e);
}

void local_bus::deliver_receipts(const std::vector<store::receipt_delivery>& receipts) {
  for (auto& [device, marks] : receipts_by_device(receipts)) {
    if (auto ep = find(device)) ep->push_receipts(std::move(marks));
  }
}

void local_bus::deliver_ephemeral(const std::string& username, wire::encoded_frame frame) {
  std::vector<std::shared_ptr<endpoint>> targets;
  {
    std::lock_guard lock(mutex_);
    auto user = by_user_.find(username);
    if (user == by_user_.end()) return;
    for (device_id d : user->second) {
      auto it = devices_.find(d);
      if (it == devices_.end()) continue;
      if (auto ep = it->second.ep.lock()) targets.push_back(std::move(ep));
    }
  }
  for (auto& ep : targets) ep->push_ephemeral(frame);
}

std::size_t local_bus::connected_devices() const {
  std::lock_guard lock(mutex_);
  return devices_.size();
}

}  // namespace parley::bus
