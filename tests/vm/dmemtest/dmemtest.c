// SPDX-License-Identifier: GPL-2.0
/*
 * dmemtest: a test "GPU driver" for the dmem cgroup controller, used by kube-dmem's real-kernel
 * tests (tests/vm/). It owns no hardware.
 *
 * What it models:
 *  - A device with one or more VRAM regions registered with the dmem controller under the given
 *    names and sizes (module parameter `regions`, default two regions named like xe and amdgpu).
 *  - Buffer allocation by a process: the buffer is charged to the calling task's dmem cgroup
 *    with dmem_cgroup_try_charge(), exactly as TTM charges a VRAM resource. Device capacity is
 *    enforced separately: resident buffers never exceed the region size.
 *  - TTM's eviction order when an allocation does not fit (drivers/gpu/drm/ttm/ttm_bo.c): an LRU
 *    walk, oldest first, asking dmem_cgroup_state_evict_valuable() per buffer, with a second pass
 *    ignoring `low` when the first one hit it. The limit pool is the pool whose max was hit, or,
 *    for a full device, NULL on 7.2 and the common ancestor of evictor and evictee on 7.3, where
 *    the 7.3 pre-pass for protected allocations (below_min/below_low) is also modelled.
 *  - 7.3's dmem_cgroup_ops.reclaim: called by the kernel when dmem.max is lowered below usage;
 *    evicts buffers charged to that pool's subtree (ttm_bo_evict_cgroup's order).
 *  - An evicted buffer leaves VRAM and is uncharged (TTM moves it to GTT); it never comes back.
 *
 * What it does not model: other placements (GTT allocation is not attempted: an allocation that
 * cannot be placed fails with -EAGAIN at a limit or -ENOSPC on a full device), pinning, LRU
 * priorities and touches, fences, ww-mutex locking, real memory (bytes are only accounted).
 *
 * Interface, /dev/dmemtest (one command per write(2); bad syntax -> EINVAL, never an oops):
 *   "REGION +BYTES"     allocate a buffer in REGION for the writer's cgroup (memparse sizes)
 *   "REGION -BYTES"     free BYTES of the writer's cgroup's resident buffers in REGION, newest
 *                       first; a partly freed buffer is uncharged and charged again smaller
 *   "REGION unregister" unregister REGION from the dmem controller (buffers stay, uncharge works)
 * Errors: EINVAL bad command, unknown or unregistered region, zero size; EAGAIN a dmem limit;
 * ENOSPC device full (or a buffer larger than the region).
 * Reading lists the regions, every buffer (id, size, owner cgroup, charged pool's cgroup,
 * resident/evicted) and the number of evictions.
 */
#include <linux/cgroup.h>
#include <linux/cgroup_dmem.h>
#include <linux/ctype.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/version.h>

/* 7.3 changed dmem_cgroup_register_region() and added the reclaim op and the 7.3 TTM helpers. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 3, 0)
#define DT_7_3 1
#else
#define DT_7_3 0
#endif

#define DT_MAX_REGIONS 4
#define DT_NAME_LEN 64
#define DT_PATH_LEN 128

static char *regions = "drm/0000:03:00.0/vram0=8514437120,drm/0000:0a:00.0/vram=17095983104";
module_param(regions, charp, 0444);
MODULE_PARM_DESC(regions, "NAME=SIZE[,NAME=SIZE...]: regions to register (memparse sizes)");
static bool reclaim = true;
module_param(reclaim, bool, 0444);
MODULE_PARM_DESC(reclaim, "register the dmem reclaim op (7.3 and later)");

struct dt_region {
	char name[DT_NAME_LEN];
	struct dmem_cgroup_region *cg;	/* NULL once unregistered */
	u64 size;
	u64 resident;
	struct list_head lru;		/* every buffer, oldest first */
};

struct dt_buf {
	struct list_head node;
	unsigned int id;
	struct dt_region *r;
	u64 bytes;
	struct dmem_cgroup_pool_state *pool;	/* the charge; NULL once evicted */
	char owner[DT_PATH_LEN];		/* the allocating task's cgroup */
	char charged[DT_PATH_LEN];		/* the cgroup of the charged pool */
};

static struct dt_region dt_regions[DT_MAX_REGIONS];
static int dt_nregions;
static DEFINE_MUTEX(dt_lock);
static unsigned int dt_next_id = 1;
static unsigned long dt_evictions;

static struct dt_region *dt_find(const char *name)
{
	int i;

	for (i = 0; i < dt_nregions; i++)
		if (dt_regions[i].cg && !strcmp(dt_regions[i].name, name))
			return &dt_regions[i];
	return NULL;
}

static void dt_evict(struct dt_buf *b)
{
	dmem_cgroup_uncharge(b->pool, b->bytes);
	b->pool = NULL;
	b->r->resident -= b->bytes;
	dt_evictions++;
}

static bool dt_room(struct dt_region *r, u64 bytes)
{
	return r->resident + bytes <= r->size;
}

/* How an eviction walk retries the allocation after each eviction. */
struct dt_walk {
	struct dt_region *r;
	u64 bytes;
	/* The limit pool for every buffer; NULL with `ancestor` set: per-buffer common ancestor. */
	struct dmem_cgroup_pool_state *limit;
	bool ancestor;
	/* Skip buffers charged to this pool (7.3, protected allocation pre-pass). */
	struct dmem_cgroup_pool_state *skip;
	bool low_pass;
	/* The charge held while walking (only device room is retried), or NULL: charge again. */
	struct dmem_cgroup_pool_state **held;
	struct dmem_cgroup_pool_state *got;	/* the charge on success */
	int err;	/* why the last attempt failed: -EAGAIN (a limit) or -ENOSPC (device full) */
};

/* Retry the allocation after an eviction; true when it fits now. */
static bool dt_retry(struct dt_walk *w)
{
	struct dmem_cgroup_pool_state *pool;

	w->err = -ENOSPC;
	if (w->held) {
		if (!dt_room(w->r, w->bytes))
			return false;
		w->got = *w->held;
		return true;
	}
	if (dmem_cgroup_try_charge(w->r->cg, w->bytes, &pool, NULL)) {
		w->err = -EAGAIN;
		return false;
	}
	if (!dt_room(w->r, w->bytes)) {
		dmem_cgroup_uncharge(pool, w->bytes);
		return false;
	}
	w->got = pool;
	return true;
}

/* ttm_bo_evict_alloc(): an LRU pass respecting low, then one ignoring it if low was hit. */
static bool dt_evict_alloc(struct dt_walk *w)
{
	bool hit_low = false, ignore_low = false;
	struct dt_buf *b;

again:
	list_for_each_entry(b, &w->r->lru, node) {
		struct dmem_cgroup_pool_state *limit = w->limit, *anc = NULL;
		bool ok;

		if (!b->pool || (w->skip && b->pool == w->skip))
			continue;
#if DT_7_3
		if (w->ancestor) {
			anc = dmem_cgroup_get_common_ancestor(b->pool, *w->held);
			limit = anc;
		}
#endif
		ok = dmem_cgroup_state_evict_valuable(limit, b->pool, ignore_low, &hit_low);
		if (anc)
			dmem_cgroup_pool_state_put(anc);
		if (!ok)
			continue;
		dt_evict(b);
		if (dt_retry(w))
			return true;
	}
	if (!ignore_low && hit_low && w->low_pass) {
		ignore_low = true;
		goto again;
	}
	return false;
}

#if DT_7_3
/* 7.3 ttm_bo_alloc_resource(): non-forced placement (with the protected pre-pass), then forced. */
static int dt_alloc(struct dt_region *r, u64 bytes, struct dmem_cgroup_pool_state **out)
{
	struct dmem_cgroup_pool_state *pool, *limit = NULL;
	struct dt_walk w = { .r = r, .bytes = bytes };
	bool may_try_low, may_evict;
	int ret;

	if (!dmem_cgroup_try_charge(r->cg, bytes, &pool, NULL)) {
		if (dt_room(r, bytes)) {
			*out = pool;
			return 0;
		}
		may_try_low = dmem_cgroup_below_min(NULL, pool);
		may_evict = may_try_low || dmem_cgroup_below_low(NULL, pool);
		if (may_evict) {
			w.ancestor = true;
			w.skip = may_try_low ? NULL : pool;
			w.low_pass = may_try_low;
			w.held = &pool;
			if (dt_evict_alloc(&w)) {
				*out = w.got;
				return 0;
			}
		}
		dmem_cgroup_uncharge(pool, bytes);
	}
	/* Forced pass. */
	ret = dmem_cgroup_try_charge(r->cg, bytes, &pool, &limit);
	w = (struct dt_walk){ .r = r, .bytes = bytes, .low_pass = true, .err = -EAGAIN };
	if (ret == -EAGAIN) {
		w.limit = limit;
		ret = dt_evict_alloc(&w) ? 0 : w.err;
		dmem_cgroup_pool_state_put(limit);
	} else if (ret) {
		return ret;
	} else if (dt_room(r, bytes)) {
		w.got = pool;
	} else {
		w.ancestor = true;
		w.held = &pool;
		if (!dt_evict_alloc(&w)) {
			dmem_cgroup_uncharge(pool, bytes);
			ret = -ENOSPC;
		}
	}
	if (!ret)
		*out = w.got;
	return ret;
}
#else
/* 7.2 ttm_bo_mem_space(): a pass without eviction, then a forced pass with a fixed limit pool. */
static int dt_alloc(struct dt_region *r, u64 bytes, struct dmem_cgroup_pool_state **out)
{
	struct dmem_cgroup_pool_state *pool, *limit = NULL;
	struct dt_walk w = { .r = r, .bytes = bytes, .low_pass = true, .err = -ENOSPC };
	int ret;

	ret = dmem_cgroup_try_charge(r->cg, bytes, &pool, &limit);
	if (ret && ret != -EAGAIN)
		return ret;
	if (!ret) {
		if (dt_room(r, bytes)) {
			*out = pool;
			return 0;
		}
		dmem_cgroup_uncharge(pool, bytes);
	} else {
		w.err = ret;
	}
	w.limit = limit;	/* the pool whose max was hit; NULL for a full device */
	if (dt_evict_alloc(&w)) {
		*out = w.got;
		ret = 0;
	} else {
		ret = w.err;
	}
	dmem_cgroup_pool_state_put(limit);
	return ret;
}
#endif

static void dt_path(struct cgroup *cgrp, char *buf)
{
	if (cgroup_path(cgrp, buf, DT_PATH_LEN) < 0)
		strscpy(buf, "?", DT_PATH_LEN);
}

/* The calling task's cgroup on the default hierarchy. */
static void dt_task_cgroup(char *buf)
{
	rcu_read_lock();
	dt_path(task_dfl_cgroup(current), buf);
	rcu_read_unlock();
}

static int dt_charge(struct dt_region *r, u64 bytes)
{
	struct cgroup_subsys_state *css;
	struct dt_buf *b;
	int ret;

	if (!bytes)
		return -EINVAL;
	if (bytes > r->size)
		return -ENOSPC;
	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	ret = dt_alloc(r, bytes, &b->pool);
	if (ret) {
		kfree(b);
		return ret;
	}
	b->id = dt_next_id++;
	b->r = r;
	b->bytes = bytes;
	dt_task_cgroup(b->owner);
	css = task_get_css(current, dmem_cgrp_id);
	dt_path(css->cgroup, b->charged);
	css_put(css);
	r->resident += bytes;
	list_add_tail(&b->node, &r->lru);
	return 0;
}

static void dt_free_buf(struct dt_buf *b)
{
	if (b->pool) {
		dmem_cgroup_uncharge(b->pool, b->bytes);
		b->r->resident -= b->bytes;
	}
	list_del(&b->node);
	kfree(b);
}

static int dt_uncharge(struct dt_region *r, u64 bytes)
{
	char owner[DT_PATH_LEN];
	struct dt_buf *b, *prev;
	int ret = 0;

	if (!bytes)
		return -EINVAL;
	dt_task_cgroup(owner);
	list_for_each_entry_safe_reverse(b, prev, &r->lru, node) {
		if (!bytes)
			break;
		if (!b->pool || strcmp(b->owner, owner))
			continue;
		if (b->bytes <= bytes) {
			bytes -= b->bytes;
			dt_free_buf(b);
			continue;
		}
		/* A charge is undone whole: uncharge the buffer and charge what is left of it. */
		dmem_cgroup_uncharge(b->pool, b->bytes);
		r->resident -= bytes;
		b->bytes -= bytes;
		bytes = 0;
		ret = dmem_cgroup_try_charge(r->cg, b->bytes, &b->pool, NULL);
		if (ret) {
			b->pool = NULL;
			r->resident -= b->bytes;
			dt_free_buf(b);
		}
	}
	return ret;
}

#if DT_7_3
/* dmem_cgroup_ops.reclaim: ttm_bo_evict_cgroup(), evict from @pool's subtree, oldest first. */
static int dt_reclaim(struct dmem_cgroup_pool_state *pool, u64 target, void *priv)
{
	struct dt_region *r = priv;
	bool hit_low = false, ignore_low = false;
	struct dt_buf *b;
	u64 freed = 0;

	mutex_lock(&dt_lock);
again:
	list_for_each_entry(b, &r->lru, node) {
		if (freed >= target)
			break;
		if (!b->pool ||
		    !dmem_cgroup_state_evict_valuable(pool, b->pool, ignore_low, &hit_low))
			continue;
		freed += b->bytes;
		dt_evict(b);
	}
	if (freed < target && hit_low && !ignore_low) {
		ignore_low = true;
		goto again;
	}
	mutex_unlock(&dt_lock);
	return freed ? 0 : -ENOSPC;
}

static const struct dmem_cgroup_ops dt_ops = {
	.reclaim = dt_reclaim,
};
#endif

static int dt_command(char *line)
{
	char *name, *arg, *end;
	struct dt_region *r;
	u64 bytes;

	line = strim(line);
	name = strsep(&line, " \t");
	if (!line || !*name)
		return -EINVAL;
	arg = skip_spaces(line);
	r = dt_find(name);
	if (!r)
		return -EINVAL;
	if (!strcmp(arg, "unregister")) {
		dmem_cgroup_unregister_region(r->cg);
		r->cg = NULL;
		return 0;
	}
	if (*arg != '+' && *arg != '-')
		return -EINVAL;
	if (!isdigit(arg[1]))
		return -EINVAL;
	bytes = memparse(arg + 1, &end);
	if (*end)
		return -EINVAL;
	return *arg == '+' ? dt_charge(r, bytes) : dt_uncharge(r, bytes);
}

static ssize_t dt_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	char *buf;
	int ret;

	if (count > 256)
		return -EINVAL;
	buf = memdup_user_nul(ubuf, count);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	mutex_lock(&dt_lock);
	ret = dt_command(buf);
	mutex_unlock(&dt_lock);
	kfree(buf);
	return ret ? ret : count;
}

static int dt_show(struct seq_file *m, void *v)
{
	struct dt_buf *b;
	int i;

	mutex_lock(&dt_lock);
	seq_printf(m, "evictions %lu\n", dt_evictions);
	for (i = 0; i < dt_nregions; i++) {
		struct dt_region *r = &dt_regions[i];

		seq_printf(m, "region %s size %llu resident %llu%s\n", r->name, r->size,
			   r->resident, r->cg ? "" : " unregistered");
		list_for_each_entry(b, &r->lru, node)
			seq_printf(m, "buffer %u %s %llu owner %s charged %s %s\n", b->id, r->name,
				   b->bytes, b->owner, b->charged, b->pool ? "resident" : "evicted");
	}
	mutex_unlock(&dt_lock);
	return 0;
}

static int dt_open(struct inode *inode, struct file *file)
{
	/* misc_open() left the miscdevice here; seq_file wants private_data for itself. */
	file->private_data = NULL;
	return single_open(file, dt_show, NULL);
}

static const struct file_operations dt_fops = {
	.owner = THIS_MODULE,
	.open = dt_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = dt_write,
};

static struct miscdevice dt_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "dmemtest",
	.fops = &dt_fops,
	.mode = 0666,
};

static void dt_teardown(void)
{
	struct dt_buf *b, *n;
	int i;

	for (i = 0; i < dt_nregions; i++) {
		list_for_each_entry_safe(b, n, &dt_regions[i].lru, node)
			dt_free_buf(b);
		if (dt_regions[i].cg)
			dmem_cgroup_unregister_region(dt_regions[i].cg);
		dt_regions[i].cg = NULL;
	}
	dt_nregions = 0;
}

/* Parse one "NAME=SIZE" and register it. */
static int dt_register(char *spec)
{
	struct dt_region *r = &dt_regions[dt_nregions];
	char *eq = strrchr(spec, '='), *end;
	struct dmem_cgroup_region *cg;

	if (!eq || eq == spec || eq - spec >= DT_NAME_LEN || !isdigit(eq[1]))
		return -EINVAL;
	*eq = '\0';
	r->size = memparse(eq + 1, &end);
	if (*end || !r->size)
		return -EINVAL;
	strscpy(r->name, spec, DT_NAME_LEN);
	INIT_LIST_HEAD(&r->lru);
#if DT_7_3
	cg = dmem_cgroup_register_region(&(struct dmem_cgroup_init){
		.size = r->size, .ops = reclaim ? &dt_ops : NULL, .reclaim_priv = r }, "%s", r->name);
#else
	cg = dmem_cgroup_register_region(r->size, "%s", r->name);
#endif
	if (IS_ERR_OR_NULL(cg))
		return cg ? PTR_ERR(cg) : -EINVAL;
	r->cg = cg;
	dt_nregions++;
	return 0;
}

static int __init dt_init(void)
{
	char *specs, *p, *spec;
	int ret = 0;

	specs = kstrdup(regions, GFP_KERNEL);
	if (!specs)
		return -ENOMEM;
	p = specs;
	while ((spec = strsep(&p, ",")) != NULL) {
		if (dt_nregions == DT_MAX_REGIONS) {
			ret = -E2BIG;
			break;
		}
		ret = dt_register(spec);
		if (ret)
			break;
	}
	kfree(specs);
	if (!ret)
		ret = misc_register(&dt_misc);
	if (ret) {
		pr_err("dmemtest: bad regions=%s (%d)\n", regions, ret);
		dt_teardown();
		return ret;
	}
	pr_info("dmemtest: %d region(s), reclaim op %s\n", dt_nregions,
		DT_7_3 && reclaim ? "on" : "off");
	return 0;
}

static void __exit dt_exit(void)
{
	misc_deregister(&dt_misc);
	mutex_lock(&dt_lock);
	dt_teardown();
	mutex_unlock(&dt_lock);
}

module_init(dt_init);
module_exit(dt_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kube-dmem test GPU: dmem cgroup regions, charges and TTM-order eviction");
