// The embedded Bus: a map of this process's connected devices. Lookups take a mutex for the
// map only; pushes happen after it is released (no lock held across a send).
#pragma once

#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "bus/bus.hpp"

namespace parley::bus {

class local_bus final : public bus {
 public:
  void attach(device_id device, const std::string& username, std::shared_ptr<endpoint> ep) override;
  void detach(device_id device, const endpoint* ep) override;
  void deliver_message(const std::vector<device_id>& devices, shared_envelope e) override;
  void deliver_receipts(const std::vector<store::receipt_delivery>& receipts) override;
  void deliver_ephemeral(const std::string& username, wire::encoded_frame frame) override;
  std::size_t connected_devices() const override;

 private:
  struct entry {
    std::string username;
    std::weak_ptr<endpoint> ep;
  };
  mutable std::mutex mutex_;
  std::unordered_map<device_id, entry> devices_;
  std::unordered_map<std::string, std::unordered_set<device_id>> by_user_;

  std::shared_ptr<endpoint> find(device_id device) const;
};

}  // namespace parley::bus
