/* placement.h - where an instance may run: the address a job record may give production<N>
 * before it goes into the pool.
 *
 * The executor checks what it is asked to do against the config; a list reports what it
 * finds, and the scaler checks that before it adopts an instance or writes its address: the
 * port must be app.base_port + N, and the host app.host (process driver) or the address of a
 * host of the Ansible inventory (docker driver: each host's tide_address, else its
 * ansible_host, else app.host, as playbooks/scale_up.yml places them). Only the host lines of
 * an INI inventory are read (variables set for a group are not); a docker host whose address
 * is set that way is not recognised, and its instances are left alone rather than adopted. */
#ifndef SCALER_PLACEMENT_H
#define SCALER_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "tide_config.h"

typedef struct placement_t placement_t;

/* The addresses instances of cfg may have. On the docker driver the inventory
 * (executor.inventory) is read now; when it cannot be read, err says why and only app.host is
 * allowed (the caller logs it). Returns NULL only when out of memory. */
placement_t *placement_new(const tide_config_t *cfg, char *err, size_t errlen);

/* Frees *self_p and sets it to NULL; nothing on NULL. */
void placement_destroy(placement_t **self_p);

/* Reads INI inventory text: adds the address of every host line. Returns the number of hosts
 * added, or -ENOMEM. Public for the unit test. */
int placement_add_inventory(placement_t *self, const char *text);

/* Checks that instance index (production<index>) may be at host:port. Returns 0, or -EINVAL
 * with the reason in why ("port 9999 is not app.base_port + 3 (8083)"). */
int placement_check(const placement_t *self, int index, const char *host, uint32_t port, char *why,
                    size_t len);

#endif
