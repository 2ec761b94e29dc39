locals {
  name     = "${var.name}-${var.role}"
  endpoint = var.region_endpoint != "" ? var.region_endpoint : aws_lb.entry.dns_name
  azs      = ["${var.region}a", "${var.region}b"]
  # Tags every resource carries. Not the provider's default_tags: moto 5.2 echoes them back
  # in a launch template's data, which Terraform then sees as drift.
  tags = merge(var.tags, {
    "drkit-service" = var.service
    "drkit-region"  = var.region
  })
}

# ---- network

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "this" {
  count             = 2
  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, count.index + 1)
  availability_zone = local.azs[count.index]
  tags              = merge(local.tags, { Name = "${local.name}-${local.azs[count.index]}" })
}

# ---- security groups: clients -> load balancer -> payments instances -> database

resource "aws_security_group" "entry" {
  name        = "${local.name}-entry"
  description = "The payments entry point (HTTPS from clients)"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

# Rules as aws_security_group_rule: moto 5.2 reports aws_vpc_security_group_*_rule's referenced
# group as "<account>/<sg>" and drops their descriptions, which Terraform then sees as drift.
resource "aws_security_group_rule" "entry_https" {
  type              = "ingress"
  security_group_id = aws_security_group.entry.id
  description       = "HTTPS from clients"
  cidr_blocks       = ["0.0.0.0/0"]
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_security_group_rule" "entry_to_app" {
  type                     = "egress"
  security_group_id        = aws_security_group.entry.id
  description              = "To the payments instances"
  source_security_group_id = aws_security_group.app.id
  protocol                 = "tcp"
  from_port                = var.app_port
  to_port                  = var.app_port
}

resource "aws_security_group" "app" {
  name        = "${local.name}-app"
  description = "The payments instances (from the load balancer only)"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_security_group_rule" "app_from_entry" {
  type                     = "ingress"
  security_group_id        = aws_security_group.app.id
  description              = "From the load balancer"
  source_security_group_id = aws_security_group.entry.id
  protocol                 = "tcp"
  from_port                = var.app_port
  to_port                  = var.app_port
}

resource "aws_security_group_rule" "app_to_db" {
  type                     = "egress"
  security_group_id        = aws_security_group.app.id
  description              = "To the database"
  source_security_group_id = aws_security_group.db.id
  protocol                 = "tcp"
  from_port                = 5432
  to_port                  = 5432
}

resource "aws_security_group" "db" {
  name        = "${local.name}-db"
  description = "The payments database (from the payments instances only)"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_security_group_rule" "db_from_app" {
  type                     = "ingress"
  security_group_id        = aws_security_group.db.id
  description              = "From the payments instances"
  source_security_group_id = aws_security_group.app.id
  protocol                 = "tcp"
  from_port                = 5432
  to_port                  = 5432
}

# ---- database: the writer in the primary region, its cross-region read replica in the secondary

resource "aws_db_subnet_group" "this" {
  # The same name in every region: moto 5.2.5 looks a cross-region replica's subnet group up in
  # the source region (real RDS looks in the replica's own region; both work with one name).
  name       = "${var.name}-db"
  subnet_ids = aws_subnet.this[*].id
  tags       = local.tags
}

resource "aws_db_instance" "this" {
  identifier             = var.db_identifier
  instance_class         = var.db_instance_class
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  skip_final_snapshot    = true
  tags                   = local.tags
  # Replicas need the source's automated backups; a promoted replica keeps them.
  backup_retention_period = 1
  # The writer is built from nothing; the replica is seeded from the other region's writer.
  engine              = var.role == "primary" ? "postgres" : null
  engine_version      = var.role == "primary" ? "15" : null
  allocated_storage   = var.role == "primary" ? 20 : null
  username            = var.role == "primary" ? var.db_username : null
  password            = var.role == "primary" ? var.db_password : null
  replicate_source_db = var.role == "secondary" ? var.source_db_arn : null
  lifecycle {
    precondition {
      condition     = var.role == "primary" ? var.db_password != null : var.source_db_arn != ""
      error_message = "role primary needs db_password; role secondary needs source_db_arn."
    }
    # A failover promotes the replica and a failback seeds a new one (drkit's data/rds adapter):
    # which region replicates which is the drill's business, not a difference to undo.
    ignore_changes = [replicate_source_db]
  }
}

# ---- load balancer and the payments instances behind it

resource "aws_lb" "entry" {
  name               = substr(local.name, 0, 32)
  load_balancer_type = "application"
  internal           = false
  subnets            = aws_subnet.this[*].id
  security_groups    = [aws_security_group.entry.id]
  tags               = local.tags
}

resource "aws_lb_target_group" "app" {
  name     = substr("${local.name}-app", 0, 32)
  port     = var.app_port
  protocol = "HTTP"
  vpc_id   = aws_vpc.this.id
  tags     = local.tags
  health_check {
    path                = "/healthz"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

# HTTP always; HTTPS when the estate gives a certificate (in ACM, imported or issued outside this
# module: certificates come from the organisation's PKI). The lab terminates TLS at its HAProxy
# entry point, which serves whatever certificate the active region's HTTPS listener names.
resource "aws_lb_listener" "app" {
  load_balancer_arn = aws_lb.entry.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
}

resource "aws_lb_listener" "https" {
  count             = var.certificate_arn != "" ? 1 : 0
  load_balancer_arn = aws_lb.entry.arn
  port              = 443
  protocol          = "HTTPS"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
  lifecycle {
    # drkit's cert-rotation-acm runbook imports each new certificate and switches the listener
    # to it: which certificate it serves is the rotation's business, not a difference to undo.
    ignore_changes = [certificate_arn]
  }
}

resource "aws_launch_template" "app" {
  name                   = local.name
  image_id               = var.ami_id
  instance_type          = var.instance_type
  vpc_security_group_ids = [aws_security_group.app.id]
  tag_specifications {
    resource_type = "instance"
    tags = {
      "drkit-service" = var.service
      "drkit-role"    = var.role
    }
  }
}

resource "aws_autoscaling_group" "app" {
  name                = local.name
  min_size            = 0
  max_size            = var.max_instances
  desired_capacity    = var.instance_count
  vpc_zone_identifier = aws_subnet.this[*].id
  target_group_arns   = [aws_lb_target_group.app.arn]
  # drkit checks capacity itself (describe after act); the provider's wait polls target health.
  wait_for_capacity_timeout = "0"
  launch_template {
    id      = aws_launch_template.app.id
    version = "$Latest"
  }
  tag {
    key                 = "drkit-service"
    value               = var.service
    propagate_at_launch = true
  }
  tag {
    key                 = "drkit-role"
    value               = var.role
    propagate_at_launch = true
  }
}

# ---- DNS: this region's failover record of the payments hostname, identified by role

data "aws_route53_zone" "this" {
  name = var.zone_name
}

resource "aws_route53_health_check" "entry" {
  count             = var.role == "primary" ? 1 : 0
  type              = "HTTPS"
  fqdn              = var.health_check_fqdn != "" ? var.health_check_fqdn : local.endpoint
  ip_address        = var.health_check_ip
  port              = var.health_check_port
  resource_path     = "/healthz"
  request_interval  = 10
  failure_threshold = 2
  tags              = merge(local.tags, { Name = "${local.name}-entry" })
}

# Records are identified by role (primary/secondary), not by region: a failover flips their
# values, so there is never a moment with two PRIMARY records (which Route53 refuses).
resource "aws_route53_record" "failover" {
  zone_id         = data.aws_route53_zone.this.zone_id
  name            = var.hostname
  type            = "CNAME"
  ttl             = 30
  set_identifier  = var.role
  records         = [local.endpoint]
  health_check_id = var.role == "primary" ? aws_route53_health_check.entry[0].id : null
  failover_routing_policy {
    type = upper(var.role)
  }
}
